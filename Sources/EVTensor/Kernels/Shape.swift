/// Layout operations: padding, concatenation, splitting, slicing and permutation, each producing a
/// contiguous tensor.

private func normalizedAxis(_ axis: Int, rank: Int, _ name: String) -> Int {
  let a = axis < 0 ? axis + rank : axis
  precondition(a >= 0 && a < rank, "\(name): axis \(axis) out of range for rank \(rank)")
  return a
}

/// Pads the last two dimensions of NCHW with `value`.
public func pad2d(
  _ x: Tensor, top: Int, bottom: Int, left: Int, right: Int, value: Float = 0
) -> Tensor {
  precondition(x.rank == 4, "pad2d: expected NCHW, got \(x.shape)")
  precondition(
    top >= 0 && bottom >= 0 && left >= 0 && right >= 0,
    "pad2d: negative padding top \(top) bottom \(bottom) left \(left) right \(right)")
  let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
  let (ho, wo) = (h + top + bottom, w + left + right)
  return Tensor(uninitializedShape: [n, c, ho, wo]) { out in
    guard out.count > 0 else { return }
    let dst = out.baseAddress!
    x.withUnsafeBufferPointer { px in
      let src = px.baseAddress
      Parallel.forEach(count: n * c, costPerItem: ho * wo) { plane in
        let d = dst + plane * ho * wo
        for i in 0..<(top * wo) { d[i] = value }
        for y in 0..<h {
          let row = d + (top + y) * wo
          for i in 0..<left { row[i] = value }
          let s = src! + (plane * h + y) * w
          for i in 0..<w { row[left + i] = s[i] }
          for i in (left + w)..<wo { row[i] = value }
        }
        for i in ((top + h) * wo)..<(ho * wo) { d[i] = value }
      }
    }
  }
}

public func concat(_ xs: [Tensor], axis: Int) -> Tensor {
  precondition(!xs.isEmpty, "concat: no tensors")
  let rank = xs[0].rank
  let a = normalizedAxis(axis, rank: rank, "concat")
  for t in xs {
    precondition(
      t.rank == rank && t.shape[..<a] == xs[0].shape[..<a]
        && t.shape[(a + 1)...] == xs[0].shape[(a + 1)...],
      "concat: shapes \(xs.map(\.shape)) differ outside axis \(a)")
  }
  let outer = xs[0].shape[..<a].reduce(1, *)
  let inner = xs[0].shape[(a + 1)...].reduce(1, *)
  var shape = xs[0].shape
  shape[a] = xs.reduce(0) { $0 + $1.shape[a] }
  let rowLength = shape[a] * inner
  return Tensor(uninitializedShape: shape) { out in
    var offset = 0
    for t in xs {
      let block = t.shape[a] * inner
      if block > 0 {
        t.withUnsafeBufferPointer { pt in
          let (src, dst) = (pt.baseAddress!, out.baseAddress! + offset)
          for o in 0..<outer {
            (dst + o * rowLength).update(from: src + o * block, count: block)
          }
        }
      }
      offset += block
    }
  }
}

public func split(_ x: Tensor, sizes: [Int], axis: Int) -> [Tensor] {
  let a = normalizedAxis(axis, rank: x.rank, "split")
  precondition(
    sizes.allSatisfy { $0 >= 0 } && sizes.reduce(0, +) == x.shape[a],
    "split: sizes \(sizes) do not add up to dimension \(a) of \(x.shape)")
  var start = 0
  return sizes.map { size in
    defer { start += size }
    return slice(x, axis: a, range: start..<(start + size))
  }
}

public func slice(_ x: Tensor, axis: Int, range: Range<Int>) -> Tensor {
  let a = normalizedAxis(axis, rank: x.rank, "slice")
  precondition(
    range.lowerBound >= 0 && range.upperBound <= x.shape[a],
    "slice: range \(range) out of bounds for dimension \(a) of \(x.shape)")
  let outer = x.shape[..<a].reduce(1, *)
  let inner = x.shape[(a + 1)...].reduce(1, *)
  var shape = x.shape
  shape[a] = range.count
  let block = range.count * inner
  let stride = x.shape[a] * inner
  return Tensor(uninitializedShape: shape) { out in
    guard out.count > 0 else { return }
    x.withUnsafeBufferPointer { px in
      let src = px.baseAddress! + range.lowerBound * inner
      let dst = out.baseAddress!
      for o in 0..<outer {
        (dst + o * block).update(from: src + o * stride, count: block)
      }
    }
  }
}

/// torch.permute followed by .contiguous(): output dimension i is input dimension perm[i].
public func permute(_ x: Tensor, _ perm: [Int]) -> Tensor {
  let rank = x.rank
  precondition(
    perm.count == rank && Set(perm) == Set(0..<rank),
    "permute: \(perm) is not a permutation of the \(rank) dimensions of \(x.shape)")
  let shape = perm.map { x.shape[$0] }
  if perm == Array(0..<rank) || x.count == 0 { return x.reshaped(shape) }
  // Merge runs of output dimensions that are also adjacent, in order, in the input: they move
  // as one. Most model permutes then become a batch of 2-D transposes ([N, C, H, W] → [N, H, W, C]
  // is [N][C, HW] → [N][HW, C]), which are done in cache-sized tiles.
  var groups: [[Int]] = []
  for d in perm where x.shape[d] != 1 {
    if let last = groups.last?.last, last + 1 == d {
      groups[groups.count - 1].append(d)
    } else {
      groups.append([d])
    }
  }
  let order = groups.map { $0[0] }.sorted()
  let reducedPerm = groups.map { order.firstIndex(of: $0[0])! }
  let reducedInShape = order.map { first in
    groups.first { $0[0] == first }!.reduce(1) { $0 * x.shape[$1] }
  }
  let r = reducedPerm.count
  if r <= 1 || reducedPerm == Array(0..<r) { return x.reshaped(shape) }
  if reducedPerm == Array(0..<(r - 2)) + [r - 1, r - 2] {
    let rows = reducedInShape[r - 2]
    let cols = reducedInShape[r - 1]
    let batch = reducedInShape.dropLast(2).reduce(1, *)
    return Tensor(uninitializedShape: shape) { out in
      x.withUnsafeBufferPointer { px in
        transposeBatch(px.baseAddress!, out.baseAddress!, batch: batch, rows: rows, cols: cols)
      }
    }
  }
  return permuteGeneral(x, perm, shape)
}

/// out[b][j][i] = in[b][i][j] for `batch` matrices of rows × cols, in 32×32 tiles so that both
/// the strided reads and the writes stay in L1.
private func transposeBatch(
  _ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, batch: Int, rows: Int, cols: Int
) {
  let tile = 32
  let rowTiles = (rows + tile - 1) / tile
  Parallel.forEach(count: batch * rowTiles, costPerItem: tile * cols) { task in
    let b = task / rowTiles
    let i0 = (task % rowTiles) * tile
    let i1 = min(rows, i0 + tile)
    let s = src + b * rows * cols
    let d = dst + b * rows * cols
    var j0 = 0
    while j0 < cols {
      let j1 = min(cols, j0 + tile)
      for j in j0..<j1 {
        let drow = d + j * rows
        for i in i0..<i1 { drow[i] = s[i * cols + j] }
      }
      j0 = j1
    }
  }
}

/// Any permutation: an odometer over the output rows, reading the input with per-dimension strides.
private func permuteGeneral(_ x: Tensor, _ perm: [Int], _ shape: [Int]) -> Tensor {
  let rank = x.rank
  var inStrides = [Int](repeating: 1, count: rank)
  for i in stride(from: rank - 2, through: 0, by: -1) {
    inStrides[i] = inStrides[i + 1] * x.shape[i + 1]
  }
  // Input stride of each output dimension.
  let strides = perm.map { inStrides[$0] }
  let last = shape[rank - 1]
  let lastStride = strides[rank - 1]
  let rows = shape.dropLast().reduce(1, *)
  return Tensor(uninitializedShape: shape) { out in
    guard out.count > 0 else { return }
    x.withUnsafeBufferPointer { px in
      let (src, dst) = (px.baseAddress!, out.baseAddress!)
      Parallel.forRanges(count: rows, costPerItem: last) { range in
        // Decompose the first row index once, then step the multi-index like an odometer.
        var index = [Int](repeating: 0, count: rank - 1)
        var rem = range.lowerBound
        var base = 0
        for d in stride(from: rank - 2, through: 0, by: -1) {
          index[d] = rem % shape[d]
          rem /= shape[d]
          base += index[d] * strides[d]
        }
        for row in range {
          let d = dst + row * last
          let s = src + base
          if lastStride == 1 {
            d.update(from: s, count: last)
          } else {
            for i in 0..<last { d[i] = s[i * lastStride] }
          }
          var dim = rank - 2
          while dim >= 0 {
            index[dim] += 1
            base += strides[dim]
            if index[dim] < shape[dim] { break }
            base -= index[dim] * strides[dim]
            index[dim] = 0
            dim -= 1
          }
        }
      }
    }
  }
}
