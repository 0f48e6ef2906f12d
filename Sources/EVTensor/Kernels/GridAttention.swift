import CKernels

/// Multi-head self-attention over square grids of tokens with SAM's decomposed relative
/// positions (segment-anything's `Attention` with `use_rel_pos`): for a query at grid cell
/// (y, x) and a key at (ky, kx),
///
///     score = scale · q·k + q·Rh[y − ky + side − 1] + q·Rw[x − kx + side − 1]
///
/// where the relative terms use the *unscaled* query, then softmax over the keys and the
/// weighted sum of the values.
///
/// - `qkv`: `[groups · side², 3 · heads · headDim]`, each group's tokens in row-major (y, x)
///   order; the columns hold q, k and v, each `heads × headDim` (the official `qkv` linear's
///   output order). A group is one attention window, or the whole grid for a global block.
/// - `relH`, `relW`: `[2·side − 1, headDim]` tables (already resized to this length), or nil
///   for no relative positions.
///
/// Returns `[groups · side², heads · headDim]`, heads side by side (the input of `proj`).
///
/// Queries run in blocks of whole grid rows, each (group, head, block) a task on its own
/// thread, so a global block's 4096² score matrix never exists at once: a task holds its rows'
/// scores only.
public func gridAttention(
  qkv: Tensor, groups: Int, side: Int, heads: Int, relH: Tensor?, relW: Tensor?, scale: Float
) -> Tensor {
  let tokens = side * side
  precondition(qkv.rank == 2 && qkv.dim(0) == groups * tokens, "gridAttention: qkv \(qkv.shape)")
  let width = qkv.dim(1)
  precondition(width % (3 * heads) == 0, "gridAttention: \(width) columns for \(heads) heads")
  let channels = width / 3
  let d = channels / heads
  let relative = relH != nil
  precondition(
    (relH == nil) == (relW == nil)
      && (!relative || (relH!.shape == [2 * side - 1, d] && relW!.shape == [2 * side - 1, d])),
    "gridAttention: relative tables \(relH?.shape ?? []) / \(relW?.shape ?? []) for side \(side), head dim \(d)"
  )
  // Rows of the query block: whole grid rows, up to about 256 queries.
  let gridRowsPerBlock = max(1, min(side, 256 / side))
  let blocks = (side + gridRowsPerBlock - 1) / gridRowsPerBlock
  let taskCount = groups * heads * blocks
  let maxRows = gridRowsPerBlock * side
  // Reversed tables make the keys of one query row a contiguous run: row `side − 1 − y + ky`
  // of the reversed table is entry `y − ky + side − 1` of the original.
  let reversedH = relH.map(reversedRows)
  let reversedW = relW.map(reversedRows)
  return Tensor(uninitializedShape: [groups * tokens, channels]) { out in
    let chunks = Parallel.chunkCount(count: taskCount, costPerItem: maxRows * tokens * d)
    let scoreSize = maxRows * tokens
    let relSize = relative ? 2 * maxRows * side : 0
    var scratch = [Float](repeating: 0, count: chunks * (scoreSize + relSize))
    scratch.withUnsafeMutableBufferPointer { scratchBuffer in
      qkv.withUnsafeBufferPointer { pqkv in
        withOptionalPointer(reversedH) { revH in
          withOptionalPointer(reversedW) { revW in
            let base = pqkv.baseAddress!
            let o = out.baseAddress!
            let work = scratchBuffer.baseAddress!
            Parallel.forChunks(count: taskCount, chunks: chunks) { chunk, range in
              let s = work + chunk * (scoreSize + relSize)
              let rel = s + scoreSize
              for task in range {
                let block = task % blocks
                let head = (task / blocks) % heads
                let group = task / (blocks * heads)
                let y0 = block * gridRowsPerBlock
                let y1 = min(side, y0 + gridRowsPerBlock)
                let rows = (y1 - y0) * side
                let groupRow = group * tokens
                let q = base + (groupRow + y0 * side) * width + head * d
                let k = base + groupRow * width + channels + head * d
                let v = k + channels
                BLAS.serialSgemm(
                  transA: false, transB: true, m: rows, n: tokens, k: d, alpha: scale,
                  a: q, lda: width, b: k, ldb: width, beta: 0, c: s, ldc: tokens)
                if let revH, let revW {
                  addRelativePositions(
                    scores: s, q: q, width: width, y0: y0, y1: y1, side: side, d: d,
                    revH: revH, revW: revW, scratch: rel)
                }
                softmaxRows(s, rows: rows, cols: tokens)
                BLAS.serialSgemm(
                  transA: false, transB: false, m: rows, n: d, k: tokens, alpha: 1,
                  a: s, lda: tokens, b: v, ldb: width, beta: 0,
                  c: o + (groupRow + y0 * side) * channels + head * d, ldc: channels)
              }
            }
          }
        }
      }
    }
  }
}

/// `scores[i, ky·side + kx] += q_i·Rh[y_i − ky + side − 1] + q_i·Rw[x_i − kx + side − 1]` for
/// the queries of grid rows `y0 ..< y1` (`q` points at the first one, rows `width` apart).
private func addRelativePositions(
  scores: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>, width: Int, y0: Int, y1: Int,
  side: Int, d: Int, revH: UnsafePointer<Float>, revW: UnsafePointer<Float>,
  scratch: UnsafeMutablePointer<Float>
) {
  let rows = (y1 - y0) * side
  let tokens = side * side
  let relH = scratch  // [rows, side]: indexed by ky
  let relW = scratch + rows * side  // [rows, side]: indexed by kx
  for y in y0..<y1 {
    // The queries of grid row y share Rh's rows for every ky.
    let local = (y - y0) * side
    BLAS.serialSgemm(
      transA: false, transB: true, m: side, n: side, k: d, alpha: 1,
      a: q + local * width, lda: width, b: revH + (side - 1 - y) * d, ldb: d, beta: 0,
      c: relH + local * side, ldc: side)
  }
  for x in 0..<side {
    // The queries of grid column x, one per grid row of the block, `side` rows apart.
    BLAS.serialSgemm(
      transA: false, transB: true, m: y1 - y0, n: side, k: d, alpha: 1,
      a: q + x * width, lda: side * width, b: revW + (side - 1 - x) * d, ldb: d, beta: 0,
      c: relW + x * side, ldc: side * side)
  }
  for i in 0..<rows {
    let row = scores + i * tokens
    let h = relH + i * side
    let w = relW + i * side
    for ky in 0..<side {
      let run = row + ky * side
      let hy = h[ky]
      for kx in 0..<side { run[kx] += hy + w[kx] }
    }
  }
}

/// Softmax of each row in place: the vector kernel where the CPU has one, else the same
/// computation in plain loops.
private func softmaxRows(_ s: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
  if evk_softmax_rows(s, rows, cols, cols, 1) != 0 { return }
  for r in 0..<rows {
    let p = s + r * cols
    let m = maximum(p, cols)
    for j in 0..<cols { p[j] = fastExp(p[j] - m) }
    let inv = 1 / sum(p, cols)
    for j in 0..<cols { p[j] *= inv }
  }
}

/// The rows of a 2-D tensor in reverse order.
private func reversedRows(_ t: Tensor) -> Tensor {
  let (n, d) = (t.dim(0), t.dim(1))
  return Tensor(uninitializedShape: [n, d]) { out in
    t.withUnsafeBufferPointer { src in
      for r in 0..<n {
        for c in 0..<d { out[r * d + c] = src[(n - 1 - r) * d + c] }
      }
    }
  }
}
