extension AMG {
  public enum RegionMode: String, Sendable, CaseIterable {
    /// Fill background regions (8-connected) smaller than the threshold, border ones included.
    case holes
    /// Remove foreground regions (8-connected) smaller than the threshold; if every region is
    /// small, keep the largest.
    case islands
  }

  /// `remove_small_regions`: the mask with small holes filled or small islands removed, and
  /// whether anything changed. Regions are 8-connected, as `cv2.connectedComponentsWithStats(…, 8)`
  /// finds them, and "small" means an area `< areaThreshold`.
  public static func removeSmallRegions(
    _ mask: [Bool], height: Int, width: Int, areaThreshold: Double, mode: RegionMode
  ) -> (mask: [Bool], changed: Bool) {
    precondition(
      mask.count == height * width,
      "removeSmallRegions: \(mask.count) pixels for \(height)×\(width)")
    let holes = mode == .holes
    let components = ConnectedComponents(height: height, width: width) { mask[$0] != holes }
    let small = components.sizes.indices.filter { Double(components.sizes[$0]) < areaThreshold }
    guard !small.isEmpty else { return (mask, false) }

    // `fill[c]`: whether pixels of component c end up set.
    var fill = [Bool](repeating: !holes, count: components.sizes.count)
    for c in small { fill[c] = holes }
    if !holes && small.count == components.sizes.count {
      // Every island is small: keep the largest, the first in OpenCV's label order on ties.
      let largest = components.sizes.indices.max { a, b in
        let (sa, sb) = (components.sizes[a], components.sizes[b])
        return sa != sb ? sa < sb : components.order[a] > components.order[b]
      }!
      fill[largest] = true
    }
    var result = mask
    result.withUnsafeMutableBufferPointer { out in
      components.labels.withUnsafeBufferPointer { labels in
        for i in 0..<(height * width) {
          let label = Int(labels[i])
          if label > 0 { out[i] = fill[label - 1] }
        }
      }
    }
    return (result, true)
  }
}

/// 8-connected components of the pixels where `isForeground` holds.
struct ConnectedComponents {
  /// Per pixel: 0 for background, else 1 + the component index.
  var labels: [Int32]
  var sizes: [Int] = []
  /// The position of each component in OpenCV's label order. OpenCV's block-based labelling
  /// (Spaghetti / BBDT) numbers components by the first 2×2 block, in raster order of blocks,
  /// that holds one of their pixels; only the islands tie-break depends on it.
  var order: [Int] = []

  init(height: Int, width: Int, isForeground: (Int) -> Bool) {
    let n = height * width
    labels = [Int32](repeating: 0, count: n)
    var foreground = [Bool](repeating: false, count: n)
    for i in 0..<n { foreground[i] = isForeground(i) }
    var firstBlock: [Int] = []
    let blocksPerRow = (width + 1) / 2
    var stack: [Int] = []
    stack.reserveCapacity(1024)
    labels.withUnsafeMutableBufferPointer { labels in
      foreground.withUnsafeBufferPointer { fg in
        for start in 0..<n where fg[start] && labels[start] == 0 {
          let label = Int32(sizes.count + 1)
          labels[start] = label
          stack.append(start)
          var size = 0
          var block = Int.max
          while let p = stack.popLast() {
            size += 1
            let (y, x) = p.quotientAndRemainder(dividingBy: width)
            block = min(block, (y >> 1) * blocksPerRow + (x >> 1))
            for dy in -1...1 {
              let yy = y + dy
              guard yy >= 0 && yy < height else { continue }
              for dx in -1...1 {
                let xx = x + dx
                guard xx >= 0 && xx < width else { continue }
                let q = yy * width + xx
                if fg[q] && labels[q] == 0 {
                  labels[q] = label
                  stack.append(q)
                }
              }
            }
          }
          sizes.append(size)
          firstBlock.append(block)
        }
      }
    }
    let ranked = firstBlock.indices.sorted { firstBlock[$0] < firstBlock[$1] }
    order = [Int](repeating: 0, count: sizes.count)
    for (rank, c) in ranked.enumerated() { order[c] = rank }
  }
}
