import EVCheckpoint
import EVTensor

/// segment-anything's `Block`: pre-norm attention (within 14×14 windows of the zero-padded
/// grid, or over the whole grid) and a pre-norm GELU MLP, each with a residual.
/// Keys: `norm1.*`, `attn.{qkv,proj}.*`, `attn.rel_pos_{h,w}`, `norm2.*`, `mlp.lin{1,2}.*`.
public struct ViTBlock: Sendable {
  public let norm1: LayerNorm
  public let attention: ViTAttention
  public let norm2: LayerNorm
  public let lin1: Linear
  public let lin2: Linear
  /// Side of the attention windows, or nil for a global block.
  public let windowSize: Int?

  public init(_ scope: WeightScope, config: SamViTConfig, index: Int) {
    let dim = config.embedDim
    windowSize = config.isGlobal(block: index) ? nil : config.windowSize
    norm1 = LayerNorm(scope["norm1"], features: dim)
    attention = ViTAttention(
      scope["attn"], config: config, side: windowSize ?? config.gridSide)
    norm2 = LayerNorm(scope["norm2"], features: dim)
    lin1 = Linear(scope["mlp"]["lin1"], inFeatures: dim, outFeatures: config.mlpDim)
    lin2 = Linear(scope["mlp"]["lin2"], inFeatures: config.mlpDim, outFeatures: dim)
  }

  /// `x`: one image's tokens, `[side², embedDim]` in row-major grid order.
  public func callAsFunction(_ x: Tensor, side: Int) -> Tensor {
    var x = x
    let normed = norm1(x)
    if let windowSize {
      let windows = partitionWindows(normed, side: side, window: windowSize)
      let attended = attention(windows.tokens, groups: windows.count, side: windowSize)
      addWindows(attended, into: &x, side: side, window: windowSize)
    } else {
      addInPlace(&x, attention(normed, groups: 1, side: side))
    }
    let hidden = lin1(norm2(x), activation: .geluErf)
    addInPlace(&x, lin2(hidden))
    return x
  }

  /// Multiply-accumulates for one image on a `side`² grid.
  public func multiplyAccumulates(side: Int) -> Int {
    let padded = windowSize.map { w in ((side + w - 1) / w * w) } ?? side
    let tokens = side * side
    return attention.multiplyAccumulates(tokens: padded * padded)
      + tokens * (lin1.inFeatures * lin1.outFeatures + lin2.inFeatures * lin2.outFeatures)
  }
}

/// segment-anything's `Attention`: one `qkv` linear, heads of `embed_dim / num_heads`, the
/// decomposed relative positions, and `proj`.
public struct ViTAttention: Sendable {
  public let qkv: Linear
  public let proj: Linear
  public let heads: Int
  /// `rel_pos_h` / `rel_pos_w` resized to `2·side − 1` rows, as `get_rel_pos` does on every call.
  public let relH: Tensor?
  public let relW: Tensor?
  /// The side of the grid the attention sees (the window, or the whole grid).
  public let side: Int

  public init(_ scope: WeightScope, config: SamViTConfig, side: Int) {
    let dim = config.embedDim
    heads = config.numHeads
    self.side = side
    qkv = Linear(scope["qkv"], inFeatures: dim, outFeatures: 3 * dim, bias: config.qkvBias)
    proj = Linear(scope["proj"], inFeatures: dim, outFeatures: dim)
    if config.useRelativePositions {
      // The official module sizes its tables from `input_size` (the window, or the grid).
      let stored = 2 * side - 1
      let h = scope.take("rel_pos_h", shape: [stored, config.headDim])
      let w = scope.take("rel_pos_w", shape: [stored, config.headDim])
      relH = resizedRelativePositions(h, length: 2 * side - 1)
      relW = resizedRelativePositions(w, length: 2 * side - 1)
    } else {
      relH = nil
      relW = nil
    }
  }

  /// `tokens`: `[groups · side², dim]`, each group (window) in row-major order.
  public func callAsFunction(_ tokens: Tensor, groups: Int, side: Int) -> Tensor {
    let headDim = qkv.inFeatures / heads
    let q = qkv(tokens)
    let attended = gridAttention(
      qkv: q, groups: groups, side: side, heads: heads, relH: relH, relW: relW,
      scale: 1 / Float(headDim).squareRoot())
    return proj(attended)
  }

  /// Multiply-accumulates over `tokens` (padded) tokens: the projections, the scores and the
  /// weighted values, and the relative terms (each query against `side` rows of each table).
  public func multiplyAccumulates(tokens: Int) -> Int {
    let dim = qkv.inFeatures
    let attention = 2 * tokens * side * side * dim
    let relative = relH == nil ? 0 : 2 * tokens * side * dim
    return tokens * dim * 4 * dim + attention + relative
  }
}

/// `get_rel_pos`'s resize: linear interpolation (`align_corners=False`) of the table's rows to
/// `length`, or the table itself when it already has that many.
package func resizedRelativePositions(_ table: Tensor, length: Int) -> Tensor {
  let (n, d) = (table.dim(0), table.dim(1))
  guard n != length else { return table }
  let scale = Float(n) / Float(length)
  return Tensor(uninitializedShape: [length, d]) { out in
    table.withUnsafeBufferPointer { src in
      for i in 0..<length {
        let position = max(scale * (Float(i) + 0.5) - 0.5, 0)
        let i0 = Int(position)
        let i1 = i0 < n - 1 ? i0 + 1 : i0
        let t = position - Float(i0)
        for c in 0..<d {
          out[i * d + c] = (1 - t) * src[i0 * d + c] + t * src[i1 * d + c]
        }
      }
    }
  }
}

/// `window_partition`: the grid zero-padded to a multiple of `window` and cut into windows,
/// each window's tokens contiguous and row-major.
func partitionWindows(_ x: Tensor, side: Int, window: Int) -> (tokens: Tensor, count: Int) {
  let perSide = (side + window - 1) / window
  let count = perSide * perSide
  let dim = x.dim(1)
  let tokens = Tensor(uninitializedShape: [count * window * window, dim]) { out in
    x.withUnsafeBufferPointer { src in
      let (s, o) = (src.baseAddress!, out.baseAddress!)
      Parallel.forEach(count: count, costPerItem: window * window * dim) { w in
        let (wy, wx) = (w / perSide, w % perSide)
        for ty in 0..<window {
          for tx in 0..<window {
            let (y, x) = (wy * window + ty, wx * window + tx)
            let row = o + ((w * window + ty) * window + tx) * dim
            if y < side && x < side {
              row.update(from: s + (y * side + x) * dim, count: dim)
            } else {
              row.update(repeating: 0, count: dim)
            }
          }
        }
      }
    }
  }
  return (tokens, count)
}

/// `window_unpartition` followed by the residual add: each window token that lies on the grid
/// is added to `x`; the padding is dropped.
func addWindows(_ windows: Tensor, into x: inout Tensor, side: Int, window: Int) {
  let perSide = (side + window - 1) / window
  let dim = x.dim(1)
  windows.withUnsafeBufferPointer { src in
    x.withUnsafeMutableBufferPointer { dst in
      let (s, o) = (src.baseAddress!, dst.baseAddress!)
      Parallel.forEach(count: side, costPerItem: side * dim) { y in
        for x in 0..<side {
          let (wy, ty, wx, tx) = (y / window, y % window, x / window, x % window)
          let w = wy * perSide + wx
          let from = s + ((w * window + ty) * window + tx) * dim
          let to = o + (y * side + x) * dim
          for c in 0..<dim { to[c] += from[c] }
        }
      }
    }
  }
}
