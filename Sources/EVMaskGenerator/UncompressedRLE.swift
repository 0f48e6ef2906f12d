/// A binary mask as SAM's generator keeps it (`mask_to_rle_pytorch`): run lengths over the
/// pixels in column-major (Fortran) order, alternating 0-runs and 1-runs and starting with a
/// 0-run (of length 0 when the first pixel is set). This is the uncompressed RLE pycocotools
/// accepts; `size` is `[height, width]`.
public struct UncompressedRLE: Sendable, Equatable, Hashable {
  public var height: Int
  public var width: Int
  /// The run lengths, stored as 32-bit values: a noisy mask has tens of thousands of runs, and
  /// everything mode can hold thousands of masks before NMS.
  public var runs: [UInt32]

  public init(height: Int, width: Int, counts: [Int]) {
    self.init(height: height, width: width, runs: counts.map { UInt32($0) })
  }

  init(height: Int, width: Int, runs: [UInt32]) {
    self.height = height
    self.width = width
    self.runs = runs
  }

  /// The run lengths, SAM's `counts`.
  public var counts: [Int] { runs.map { Int($0) } }

  /// Encodes a row-major mask.
  public init(mask: [Bool], height: Int, width: Int) {
    precondition(
      mask.count == height * width, "UncompressedRLE: \(mask.count) pixels for \(height)×\(width)")
    var builder = RunBuilder()
    for x in 0..<width {
      for y in 0..<height { builder.append(mask[y * width + x]) }
    }
    self.init(height: height, width: width, runs: builder.finish())
  }

  /// `area_from_rle`: the number of set pixels.
  public var area: Int {
    var total = 0
    var i = 1
    while i < runs.count {
      total += Int(runs[i])
      i += 2
    }
    return total
  }

  /// `rle_to_mask`: the row-major mask.
  public func mask() -> [Bool] {
    precondition(
      runs.reduce(0) { $0 + Int($1) } == height * width,
      "UncompressedRLE: counts do not cover \(height)×\(width) pixels")
    var mask = [Bool](repeating: false, count: height * width)
    guard height > 0 else { return mask }
    mask.withUnsafeMutableBufferPointer { out in
      // Walk the column-major runs keeping (x, y) instead of dividing every index.
      var (x, y) = (0, 0)
      var value = false
      for run in runs {
        let count = Int(run)
        if value {
          for _ in 0..<count {
            out[y * width + x] = true
            y += 1
            if y == height { (x, y) = (x + 1, 0) }
          }
        } else {
          let position = x * height + y + count
          (x, y) = position.quotientAndRemainder(dividingBy: height)
        }
        value.toggle()
      }
    }
    return mask
  }

  /// `{"size": [h, w], "counts": [...]}`.
  public var jsonObject: [String: Any] { ["size": [height, width], "counts": counts] }
}

/// Accumulates column-major pixels into run lengths.
struct RunBuilder {
  private(set) var counts: [UInt32] = []
  private var current = false
  private var run = 0

  @inline(__always)
  mutating func append(_ value: Bool) {
    if value != current {
      counts.append(UInt32(run))
      run = 0
      current = value
    }
    run += 1
  }

  /// `length` pixels of value 0.
  mutating func appendZeros(_ length: Int) {
    guard length > 0 else { return }
    if current {
      counts.append(UInt32(run))
      run = 0
      current = false
    }
    run += length
  }

  /// A column of a row-major 0/1 byte mask: `rows` pixels `stride` bytes apart.
  mutating func appendColumn(_ base: UnsafePointer<UInt8>, rows: Int, stride: Int) {
    var p = base
    for _ in 0..<rows {
      let value = p.pointee != 0
      if value != current {
        counts.append(UInt32(run))
        run = 0
        current = value
      }
      run += 1
      p += stride
    }
  }

  mutating func finish() -> [UInt32] {
    counts.append(UInt32(run))
    return counts
  }
}
