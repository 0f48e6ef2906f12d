// COCO run-length encoding, computing bit for bit what pycocotools (maskApi.c, 2.0.11) computes:
// runs over the mask in column-major (Fortran) order, alternating background / foreground and
// always starting with a (possibly empty) background run.

/// A binary mask as COCO run lengths.
public struct RLE: Hashable, Sendable {
  public let height: Int
  public let width: Int
  /// Column-major run lengths, starting with background; they sum to `height * width`.
  public let counts: [UInt32]

  /// Wraps run lengths, checking that they cover the mask exactly (pycocotools does not check,
  /// and then reads or writes out of bounds; a wrong sum means a corrupt annotation).
  public init(height: Int, width: Int, counts: [UInt32]) throws(RLEError) {
    guard RLE.isValidSize(height: height, width: width) else {
      throw .invalidSize(height: height, width: width)
    }
    var total = 0
    for c in counts { total += Int(c) }
    guard total == height * width else {
      throw .countsDoNotCoverMask(sum: total, height: height, width: width)
    }
    self.init(unchecked: height, width, counts)
  }

  /// Sizes whose pixel count fits pycocotools' 32-bit run lengths: larger masks cannot be
  /// written as COCO RLE, and their `height * width` could overflow.
  public static func isValidSize(height: Int, width: Int) -> Bool {
    guard height >= 0, width >= 0 else { return false }
    let (pixels, overflow) = height.multipliedReportingOverflow(by: width)
    return !overflow && pixels <= Int(UInt32.max)
  }

  init(unchecked height: Int, _ width: Int, _ counts: [UInt32]) {
    self.height = height
    self.width = width
    self.counts = counts
  }

  /// An all-background mask.
  public static func empty(height: Int, width: Int) -> RLE {
    RLE(unchecked: height, width, [UInt32(height * width)])
  }

  // MARK: - Encoding

  /// Encodes a row-major `height × width` mask (any nonzero byte is foreground).
  public init(rowMajor mask: UnsafeBufferPointer<UInt8>, height: Int, width: Int) {
    precondition(
      mask.count == height * width, "mask has \(mask.count) values, expected \(height)×\(width)")
    var binary = true
    for v in mask where v > 1 {
      binary = false
      break
    }
    if binary {
      self.init(binaryRowMajor: mask, height: height, width: width)
    } else {
      let n = mask.count
      let normalized = [UInt8](unsafeUninitializedCapacity: n) { out, count in
        for i in 0..<n { out[i] = mask[i] != 0 ? 1 : 0 }
        count = n
      }
      self = normalized.withUnsafeBufferPointer {
        RLE(binaryRowMajor: $0, height: height, width: width)
      }
    }
  }

  public init(rowMajor mask: [UInt8], height: Int, width: Int) {
    self = mask.withUnsafeBufferPointer { RLE(rowMajor: $0, height: height, width: width) }
  }

  public init(rowMajor mask: [Bool], height: Int, width: Int) {
    precondition(
      mask.count == height * width, "mask has \(mask.count) values, expected \(height)×\(width)")
    // A Bool is stored as the byte 0 or 1.
    self = mask.withUnsafeBufferPointer { buffer in
      buffer.withMemoryRebound(to: UInt8.self) {
        RLE(binaryRowMajor: $0, height: height, width: width)
      }
    }
  }

  /// Encodes `values > threshold` of a row-major float map (the automatic mask generator's hot
  /// path: logits → RLE).
  public init(
    rowMajor values: UnsafeBufferPointer<Float>, threshold: Float, height: Int, width: Int
  ) {
    precondition(
      values.count == height * width, "map has \(values.count) values, expected \(height)×\(width)")
    let n = height * width
    let bytes = [UInt8](unsafeUninitializedCapacity: n) { out, count in
      for i in 0..<n { out[i] = values[i] > threshold ? 1 : 0 }
      count = n
    }
    self = bytes.withUnsafeBufferPointer { RLE(binaryRowMajor: $0, height: height, width: width) }
  }

  /// Runs straight from a row-major 0/1 mask, without transposing it. In column-major order a
  /// pixel's predecessor is the one above it, or for the top row the bottom of the previous
  /// column; so the run boundaries are where a row differs from the row above (found eight
  /// bytes at a time), plus the column starts. Bucketing those by column sorts them.
  private init(binaryRowMajor m: UnsafeBufferPointer<UInt8>, height h: Int, width w: Int) {
    let n = h * w
    guard n > 0, let base = m.baseAddress else {
      self.init(unchecked: h, w, [0])
      return
    }
    let raw = UnsafeRawPointer(base)
    var changeX: [Int32] = []
    var changeY: [Int32] = []
    var perColumn = [Int](repeating: 0, count: w + 1)
    for y in 1..<max(h, 1) {
      let row = y * w
      let above = row - w
      var x = 0
      while x + 8 <= w {
        let a = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: row + x, as: UInt64.self))
        let b = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: above + x, as: UInt64.self))
        var diff = a ^ b
        while diff != 0 {
          let byte = diff.trailingZeroBitCount / 8
          changeX.append(Int32(x + byte))
          changeY.append(Int32(y))
          perColumn[x + byte + 1] += 1
          diff &= ~(UInt64(0xFF) << UInt64(byte * 8))
        }
        x += 8
      }
      while x < w {
        if base[row + x] != base[above + x] {
          changeX.append(Int32(x))
          changeY.append(Int32(y))
          perColumn[x + 1] += 1
        }
        x += 1
      }
    }
    for x in 0..<w { perColumn[x + 1] += perColumn[x] }
    // Stable bucket sort by column; rows were found in increasing order.
    var sortedY = [Int32](repeating: 0, count: changeY.count)
    var next = perColumn
    for k in changeX.indices {
      let x = Int(changeX[k])
      sortedY[next[x]] = changeY[k]
      next[x] += 1
    }
    var counts: [UInt32] = []
    counts.reserveCapacity(changeY.count + w / 4 + 2)
    var last = 0
    let bottom = (h - 1) * w
    for x in 0..<w {
      let previous: UInt8 = x > 0 ? base[bottom + x - 1] : 0
      if base[x] != previous {
        counts.append(UInt32(x * h - last))
        last = x * h
      }
      for k in perColumn[x]..<perColumn[x + 1] {
        let p = x * h + Int(sortedY[k])
        counts.append(UInt32(p - last))
        last = p
      }
    }
    counts.append(UInt32(n - last))
    self.init(unchecked: h, w, counts)
  }

  /// Encodes a column-major mask (pycocotools' native layout; nonzero is foreground).
  public init(columnMajor mask: UnsafeBufferPointer<UInt8>, height: Int, width: Int) {
    precondition(
      mask.count == height * width, "mask has \(mask.count) values, expected \(height)×\(width)")
    let n = height * width
    let binary = [UInt8](unsafeUninitializedCapacity: n) { out, count in
      for i in 0..<n { out[i] = mask[i] != 0 ? 1 : 0 }
      count = n
    }
    self = binary.withUnsafeBufferPointer {
      RLE(binaryColumnMajor: $0, height: height, width: width)
    }
  }

  /// Scans a column-major buffer holding only 0 and 1, skipping eight equal bytes at a time.
  private init(binaryColumnMajor m: UnsafeBufferPointer<UInt8>, height: Int, width: Int) {
    let n = m.count
    var counts: [UInt32] = []
    counts.reserveCapacity(64)
    guard let base = m.baseAddress, n > 0 else {
      self.init(unchecked: height, width, [0])
      return
    }
    let raw = UnsafeRawPointer(base)
    var value: UInt8 = 0
    var j = 0
    var runStart = 0
    while true {
      let pattern: UInt64 = value == 0 ? 0 : 0x0101_0101_0101_0101
      while j + 8 <= n && raw.loadUnaligned(fromByteOffset: j, as: UInt64.self) == pattern {
        j += 8
      }
      while j < n && base[j] == value { j += 1 }
      if j == n { break }
      counts.append(UInt32(j - runStart))
      runStart = j
      value ^= 1
    }
    counts.append(UInt32(n - runStart))
    self.init(unchecked: height, width, counts)
  }

  // MARK: - Decoding

  /// The mask in column-major order, 0 or 1 per pixel.
  public func decodeColumnMajor() -> [UInt8] {
    let n = height * width
    return [UInt8](unsafeUninitializedCapacity: n) { out, count in
      var position = 0
      var value: UInt8 = 0
      for c in counts {
        let end = position + Int(c)
        if end > position {
          (out.baseAddress! + position).initialize(repeating: value, count: end - position)
        }
        position = end
        value ^= 1
      }
      count = n
    }
  }

  /// The mask in row-major order, 0 or 1 per pixel.
  ///
  /// Built row by row without a transpose: each row is the row above with the pixels flipped
  /// where a run boundary falls inside a column; the top row comes from the runs covering each
  /// column's first pixel.
  public func decodeRowMajor() -> [UInt8] {
    let h = height
    let w = width
    let n = h * w
    guard n > 0 else { return [] }
    var top = [UInt8](repeating: 0, count: w)
    var perRow = [Int](repeating: 0, count: h + 1)
    var position = 0
    var value: UInt8 = 0
    var column = 0
    for c in counts {
      let end = min(position + Int(c), n)
      while column < w && column * h < end {
        top[column] = value
        column += 1
      }
      if end < n, end % h != 0 { perRow[end % h + 1] += 1 }
      position = end
      value ^= 1
    }
    for y in 0..<h { perRow[y + 1] += perRow[y] }
    var flips = [Int32](repeating: 0, count: perRow[h])
    var next = perRow
    position = 0
    for c in counts {
      position = min(position + Int(c), n)
      if position < n, position % h != 0 {
        let y = position % h
        flips[next[y]] = Int32(position / h)
        next[y] += 1
      }
    }
    return [UInt8](unsafeUninitializedCapacity: n) { out, count in
      let o = out.baseAddress!
      top.withUnsafeBufferPointer { o.initialize(from: $0.baseAddress!, count: w) }
      for y in 1..<h {
        (o + y * w).initialize(from: o + (y - 1) * w, count: w)
        for k in perRow[y]..<perRow[y + 1] { o[y * w + Int(flips[k])] ^= 1 }
      }
      count = n
    }
  }

  /// The mask in row-major order as booleans.
  public func decodeRowMajorBool() -> [Bool] {
    decodeRowMajor().map { $0 != 0 }
  }

  // MARK: - Measures

  /// Foreground pixel count (pycocotools `area`).
  public var area: Int {
    var a = 0
    var j = 1
    while j < counts.count {
      a += Int(counts[j])
      j += 2
    }
    return a
  }

  /// The tight box around the foreground, XYWH, as pycocotools `toBbox` computes it (all zero for
  /// an empty mask; a foreground run crossing a column boundary spans the full height).
  public var boundingBox: BoxXYWH {
    let m = (counts.count / 2) * 2
    if m == 0 || height == 0 { return BoxXYWH(x: 0, y: 0, width: 0, height: 0) }
    let h = UInt32(truncatingIfNeeded: height)
    var xs = UInt32(truncatingIfNeeded: width)
    var ys = h
    var xe: UInt32 = 0
    var ye: UInt32 = 0
    var cc: UInt32 = 0
    for j in 0..<m {
      let start = cc
      cc &+= counts[j]
      if j % 2 == 0 || counts[j] == 0 { continue }
      let yStart = start % h
      let xStart = (start - yStart) / h
      let yEnd = (cc - 1) % h
      let xEnd = (cc - 1 - yEnd) / h
      xs = min(xs, xStart)
      xe = max(xe, xEnd)
      if xStart < xEnd {
        ys = 0
        ye = h - 1
      } else {
        ys = min(ys, yStart)
        ye = max(ye, yEnd)
      }
    }
    // Unsigned wrap-around reproduces pycocotools for a mask whose only runs are empty.
    return BoxXYWH(
      x: Double(xs), y: Double(ys), width: Double(xe &- xs &+ 1), height: Double(ye &- ys &+ 1))
  }

  // MARK: - Combining

  /// Union (or intersection) of masks of one size, as pycocotools `merge`.
  public static func merge(_ rles: [RLE], intersect: Bool = false) throws(RLEError) -> RLE {
    guard let first = rles.first else { return RLE(unchecked: 0, 0, []) }
    if rles.count == 1 { return first }
    for r in rles where r.height != first.height || r.width != first.width {
      throw .sizeMismatch(expected: [first.height, first.width], found: [r.height, r.width])
    }
    if first.height * first.width == 0 { return first }
    var current = first.counts
    for other in rles.dropFirst() {
      current = mergeCounts(current, other.counts, intersect: intersect)
    }
    return RLE(unchecked: first.height, first.width, current)
  }

  /// One pairwise step of pycocotools' rleMerge: walk both run lists in lock step and cut a run
  /// whenever the combined value changes.
  private static func mergeCounts(_ a: [UInt32], _ b: [UInt32], intersect: Bool) -> [UInt32] {
    var out: [UInt32] = []
    out.reserveCapacity(max(a.count, b.count) + 1)
    var ca = a[0]
    var cb = b[0]
    var ia = 1
    var ib = 1
    var va = false
    var vb = false
    var v = false
    var cc: UInt32 = 0
    var remaining: UInt32 = 1
    while remaining > 0 {
      let c = min(ca, cb)
      cc += c
      remaining = 0
      ca -= c
      if ca == 0 && ia < a.count {
        ca = a[ia]
        ia += 1
        va.toggle()
      }
      remaining += ca
      cb -= c
      if cb == 0 && ib < b.count {
        cb = b[ib]
        ib += 1
        vb.toggle()
      }
      remaining += cb
      let previous = v
      v = intersect ? (va && vb) : (va || vb)
      if v != previous || remaining == 0 {
        out.append(cc)
        cc = 0
      }
    }
    return out
  }

  /// IoU matrix `[dt][gt]` as pycocotools `iou` on RLEs: for a crowd ground truth the union is
  /// the detection's area; masks of different sizes give -1.
  public static func iou(_ dt: [RLE], _ gt: [RLE], isCrowd: [Bool]) -> [[Double]] {
    precondition(isCrowd.count == gt.count, "isCrowd must have one entry per ground truth")
    let dtBoxes = dt.map(\.boundingBox)
    let gtBoxes = gt.map(\.boundingBox)
    var o = BoxXYWH.iou(dtBoxes, gtBoxes, isCrowd: isCrowd)
    for d in dt.indices {
      for g in gt.indices where o[d][g] > 0 {
        o[d][g] = pairIoU(dt[d], gt[g], crowd: isCrowd[g])
      }
    }
    return o
  }

  /// IoU of two masks (the union is `dt`'s area when `crowd`), -1 when their sizes differ.
  public static func pairIoU(_ dt: RLE, _ gt: RLE, crowd: Bool = false) -> Double {
    if dt.height != gt.height || dt.width != gt.width { return -1 }
    if dt.counts.isEmpty || gt.counts.isEmpty { return 0 }
    let a = dt.counts
    let b = gt.counts
    var ca = a[0]
    var cb = b[0]
    var ia = 1
    var ib = 1
    var va = false
    var vb = false
    var inter: UInt32 = 0
    var union: UInt32 = 0
    var remaining: UInt32 = 1
    while remaining > 0 {
      let c = min(ca, cb)
      if va || vb {
        union &+= c
        if va && vb { inter &+= c }
      }
      remaining = 0
      ca -= c
      if ca == 0 && ia < a.count {
        ca = a[ia]
        ia += 1
        va.toggle()
      }
      remaining += ca
      cb -= c
      if cb == 0 && ib < b.count {
        cb = b[ib]
        ib += 1
        vb.toggle()
      }
      remaining += cb
    }
    if inter == 0 {
      union = 1
    } else if crowd {
      union = UInt32(truncatingIfNeeded: dt.area)
    }
    return Double(inter) / Double(union)
  }

  // MARK: - From geometry

  /// Rasterises one polygon `[x0, y0, x1, y1, …]` exactly as pycocotools `frPoly` (rleFrPoly):
  /// vertices scaled ×5 and rounded, edges walked densely, the y-boundary crossings downsampled
  /// back to pixel centres. A trailing odd coordinate is ignored, as pycocotools does.
  public init(polygon xy: [Double], height: Int, width: Int) {
    self = RLE.rasterize(polygon: xy, pointCount: xy.count / 2, height: height, width: width)
  }

  /// The box `[x, y, w, h]` as a 4-vertex polygon (pycocotools `frBbox`).
  public init(box: BoxXYWH, height: Int, width: Int) {
    let xs = box.x
    let xe = box.x + box.width
    let ys = box.y
    let ye = box.y + box.height
    self = RLE.rasterize(
      polygon: [xs, ys, xs, ye, xe, ye, xe, ys], pointCount: 4, height: height, width: width)
  }

  /// Walks longer than this many points (in the ×5 frame) take the sparse path, which visits
  /// only the column crossings inside the image; shorter ones are walked densely as pycocotools
  /// does. A polygon far outside the image (a coordinate of 3e8) would otherwise walk billions
  /// of points.
  package static let denseWalkLimit = 1 << 22

  package static func rasterize(
    polygon xy: [Double], pointCount k: Int, height h: Int, width w: Int,
    denseLimit: Int = denseWalkLimit
  ) -> RLE {
    var x = [Int](repeating: 0, count: k + 1)
    var y = [Int](repeating: 0, count: k + 1)
    for j in 0..<k {
      x[j] = PolygonEdge.toInt(PolygonEdge.scale * xy[2 * j] + 0.5)
      y[j] = PolygonEdge.toInt(PolygonEdge.scale * xy[2 * j + 1] + 0.5)
    }
    if k > 0 {
      x[k] = x[0]
      y[k] = y[0]
    }
    var total = 0
    for j in 0..<k { total += max(abs(x[j] - x[j + 1]), abs(y[j] - y[j + 1])) + 1 }
    let edges = (0..<k).map { PolygonEdge(x[$0], y[$0], x[$0 + 1], y[$0 + 1]) }
    var starts: [UInt32] =
      total <= denseLimit || w <= 0 || h <= 0
      ? denseCrossings(edges, total: total, height: h, width: w)
      : sparseCrossings(edges, height: h, width: w)
    return runs(fromCrossings: &starts, height: h, width: w)
  }

  /// pycocotools' walk: every point of every edge, then the crossings between neighbours.
  private static func denseCrossings(
    _ edges: [PolygonEdge], total: Int, height h: Int, width w: Int
  ) -> [UInt32] {
    var u = [Int]()
    var v = [Int]()
    u.reserveCapacity(total)
    v.reserveCapacity(total)
    for edge in edges {
      for d in 0...edge.length {
        let p = edge.point(edge.flip ? edge.length - d : d)
        u.append(p.u)
        v.append(p.v)
      }
    }
    var starts: [UInt32] = []
    for j in 1..<max(u.count, 1) where u[j] != u[j - 1] {
      if let s = crossing(u[j - 1], v[j - 1], u[j], v[j], height: h, width: w) {
        starts.append(s)
      }
    }
    return starts
  }

  /// The same crossings without the walk: within an edge the column index moves by one at a
  /// time and monotonically, so only the steps onto the columns whose centres lie inside the
  /// image (×5 frame: 5c + 2 for c in 0..<w) can count, and each is found directly (x-major
  /// edges) or by bisection on the monotone rounding (y-major edges). The neighbours across
  /// two edges are checked as the walk would.
  private static func sparseCrossings(_ edges: [PolygonEdge], height h: Int, width w: Int)
    -> [UInt32]
  {
    var starts: [UInt32] = []
    let lastColumn = 5 * (w - 1) + 2
    for (j, edge) in edges.enumerated() {
      if j > 0 {
        let previous = edges[j - 1].last
        let first = edge.first
        if previous.u != first.u,
          let s = crossing(previous.u, previous.v, first.u, first.v, height: h, width: w)
        {
          starts.append(s)
        }
      }
      // Steps t-1 → t of this edge whose smaller column index is m.
      let a = edge.point(0).u
      let b = edge.point(edge.length).u
      let lo = max(min(a, b), 2)
      let hi = min(max(a, b) - 1, lastColumn)
      guard lo <= hi else { continue }
      var m = lo + ((2 - lo) % 5 + 5) % 5
      while m <= hi {
        let t = edge.step(toward: m)
        let p = edge.point(t - 1)
        let q = edge.point(t)
        if let s = crossing(p.u, p.v, q.u, q.v, height: h, width: w) { starts.append(s) }
        m += 5
      }
    }
    return starts
  }

  /// The run start of the boundary step between walk points (u0, v0) → (u1, v1) if it crosses
  /// the centre line of a column inside the image, in pixel units (pycocotools' test, exactly).
  @inline(__always)
  private static func crossing(
    _ u0: Int, _ v0: Int, _ u1: Int, _ v1: Int, height h: Int, width w: Int
  )
    -> UInt32?
  {
    let wMinus1 = Double(UInt(bitPattern: w &- 1))  // pycocotools compares with unsigned w-1
    var xd = Double(u1 < u0 ? u1 : u1 - 1)
    xd = (xd + 0.5) / PolygonEdge.scale - 0.5
    if xd.rounded(.down) != xd || xd < 0 || xd > wMinus1 { return nil }
    var yd = Double(v1 < v0 ? v1 : v0)
    yd = (yd + 0.5) / PolygonEdge.scale - 0.5
    if yd < 0 { yd = 0 } else if yd > Double(h) { yd = Double(h) }
    yd = yd.rounded(.up)
    return UInt32(truncatingIfNeeded: Int(xd) * h + Int(yd))
  }

  private static func runs(fromCrossings starts: inout [UInt32], height h: Int, width w: Int)
    -> RLE
  {
    starts.append(UInt32(truncatingIfNeeded: h * w))
    starts.sort()
    var previous: UInt32 = 0
    for j in starts.indices {
      let t = starts[j]
      starts[j] = t &- previous
      previous = t
    }
    // Crossings at the same position cancel: fold a zero-length run into its neighbour.
    var runs: [UInt32] = [starts[0]]
    var j = 1
    while j < starts.count {
      if starts[j] > 0 {
        runs.append(starts[j])
        j += 1
      } else {
        j += 1
        if j < starts.count {
          runs[runs.count - 1] += starts[j]
          j += 1
        }
      }
    }
    return RLE(unchecked: h, w, runs)
  }
}

/// One edge of pycocotools' polygon walk in the ×5 frame, after its endpoints are put in
/// increasing order of the major axis (`flip`). Point `t` counts from that start; the walk
/// itself visits `t = length … 0` when flipped, so its first and last points swap.
struct PolygonEdge {
  static let scale = 5.0

  /// C's `(int)(v + .5)` as pycocotools writes it: truncation toward zero, in 32 bits.
  @inline(__always) static func toInt(_ v: Double) -> Int {
    guard v.isFinite else { return 0 }
    return Int(Int32(clamping: Int64(max(min(v, 2.0e9), -2.0e9))))
  }

  let xs: Int
  let ys: Int
  let xMajor: Bool
  let flip: Bool
  let length: Int
  let slope: Double

  init(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int) {
    var xs = x0
    var xe = x1
    var ys = y0
    var ye = y1
    let dx = abs(xe - xs)
    let dy = abs(ys - ye)
    flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye)
    if flip {
      swap(&xs, &xe)
      swap(&ys, &ye)
    }
    xMajor = dx >= dy
    length = xMajor ? dx : dy
    if xMajor {
      slope = dx == 0 ? 0 : Double(ye - ys) / Double(dx)
    } else {
      slope = Double(xe - xs) / Double(dy)
    }
    self.xs = xs
    self.ys = ys
  }

  @inline(__always) func point(_ t: Int) -> (u: Int, v: Int) {
    xMajor
      ? (t + xs, PolygonEdge.toInt(Double(ys) + slope * Double(t) + 0.5))
      : (PolygonEdge.toInt(Double(xs) + slope * Double(t) + 0.5), t + ys)
  }

  var first: (u: Int, v: Int) { point(flip ? length : 0) }
  var last: (u: Int, v: Int) { point(flip ? 0 : length) }

  /// The t in 1…length whose step t−1 → t moves the column index between m and m + 1, for an m
  /// the edge passes (the index is monotone along the edge and moves by at most one a step).
  func step(toward m: Int) -> Int {
    if xMajor { return m - xs + 1 }
    let increasing = point(length).u >= point(0).u
    var lo = 1
    var hi = length
    while lo < hi {
      let mid = lo + (hi - lo) / 2
      let u = point(mid).u
      if increasing ? u >= m + 1 : u <= m { hi = mid } else { lo = mid + 1 }
    }
    return lo
  }
}

/// A box as pycocotools stores it: top-left corner, width, height.
public struct BoxXYWH: Hashable, Sendable, Codable {
  public var x: Double
  public var y: Double
  public var width: Double
  public var height: Double

  public init(x: Double, y: Double, width: Double, height: Double) {
    self.x = x
    self.y = y
    self.width = width
    self.height = height
  }

  public var array: [Double] { [x, y, width, height] }
  public var area: Double { width * height }

  /// IoU matrix `[dt][gt]` as pycocotools `bbIou`; for a crowd ground truth the union is the
  /// detection's area.
  public static func iou(_ dt: [BoxXYWH], _ gt: [BoxXYWH], isCrowd: [Bool]) -> [[Double]] {
    precondition(isCrowd.count == gt.count, "isCrowd must have one entry per ground truth")
    var o = [[Double]](repeating: [Double](repeating: 0, count: gt.count), count: dt.count)
    for (g, G) in gt.enumerated() {
      let ga = G.width * G.height
      for (d, D) in dt.enumerated() {
        let da = D.width * D.height
        let w = min(D.width + D.x, G.width + G.x) - max(D.x, G.x)
        if w <= 0 { continue }
        let h = min(D.height + D.y, G.height + G.y) - max(D.y, G.y)
        if h <= 0 { continue }
        let i = w * h
        let u = isCrowd[g] ? da : da + ga - i
        o[d][g] = i / u
      }
    }
    return o
  }
}

public enum RLEError: Error, Equatable, CustomStringConvertible {
  case invalidSize(height: Int, width: Int)
  case countsDoNotCoverMask(sum: Int, height: Int, width: Int)
  case invalidCharacter(position: Int, character: UInt8)
  case truncatedString
  case countOutOfRange(index: Int, value: Int64)
  case sizeMismatch(expected: [Int], found: [Int])

  public var description: String {
    switch self {
    case .invalidSize(let h, let w):
      return
        "invalid RLE size [\(h), \(w)]: height and width must be non-negative, with at most 2^32 − 1 pixels"
    case .countsDoNotCoverMask(let sum, let h, let w):
      return "RLE counts sum to \(sum) pixels but the mask size [\(h), \(w)] has \(h * w)"
    case .invalidCharacter(let p, let c):
      return "compressed RLE has an invalid character (byte \(c)) at position \(p); "
        + "valid characters are ASCII 48 ('0') to 111 ('o')"
    case .truncatedString:
      return "compressed RLE string ends in the middle of a run length"
    case .countOutOfRange(let i, let v):
      return "compressed RLE run \(i) decodes to \(v), outside 0…\(UInt32.max)"
    case .sizeMismatch(let e, let f):
      return "cannot combine masks of different sizes \(e) and \(f)"
    }
  }
}
