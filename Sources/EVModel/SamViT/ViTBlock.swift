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
  ///
  /// A windowed block projects only the grid's tokens: the official code projects the
  /// zero-padded grid, whose padding rows come out of `qkv` as its bias exactly (0·W + b), and
  /// drops them after `proj`; here they are filled with that bias after the projection.
  public func callAsFunction(_ x: Tensor, side: Int) -> Tensor {
    var x = x
    let projected = attention.qkv(norm1(x))
    if let windowSize {
      let windows = partitionWindows(
        projected, side: side, window: windowSize, padding: attention.qkv.bias)
      let attended = attention.attend(windows.tokens, groups: windows.count, side: windowSize)
      addInPlace(&x, attention.proj(mergeWindows(attended, side: side, window: windowSize)))
    } else {
      addInPlace(&x, attention.proj(attention.attend(projected, groups: 1, side: side)))
    }
    var hidden = linear(norm2(x), weight: lin1.weight, bias: nil)
    if let bias = lin1.bias {
      let (rows, cols) = (hidden.dim(0), hidden.dim(1))
      hidden.withUnsafeMutableBufferPointer { h in
        bias.withUnsafeBufferPointer { b in
          RowOps.biasGELU(
            h.baseAddress!, rows: rows, cols: cols, stride: cols, bias: b.baseAddress!)
        }
      }
    } else {
      activateInPlace(&hidden, .geluErf)
    }
    addInPlace(&x, lin2(hidden))
    return x
  }

  /// Multiply-accumulates for one image on a `side`² grid, as the official code does them:
  /// a windowed block projects the zero-padded grid.
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

  /// Multi-head attention over `qkv`'s projections, `[groups · side², 3·dim]`, each group (window)
  /// in row-major order; returns the heads side by side, `[groups · side², dim]` (`proj`'s input).
  public func attend(_ qkv: Tensor, groups: Int, side: Int) -> Tensor {
    let headDim = self.qkv.inFeatures / heads
    return gridAttention(
      qkv: qkv, groups: groups, side: side, heads: heads, relH: relH, relW: relW,
      scale: 1 / Float(headDim).squareRoot())
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

/// `window_partition`: the grid padded to a multiple of `window` (with `padding` rows, zeros
/// when nil) and cut into windows, each window's tokens contiguous and row-major.
func partitionWindows(_ x: Tensor, side: Int, window: Int, padding: Tensor? = nil) -> (
  tokens: Tensor, count: Int
) {
  let perSide = (side + window - 1) / window
  let count = perSide * perSide
  let dim = x.dim(1)
  let padRow = padding?.storage ?? [Float](repeating: 0, count: dim)
  precondition(padRow.count == dim, "partitionWindows: padding of \(padRow.count) for \(dim)")
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
              padRow.withUnsafeBufferPointer { row.update(from: $0.baseAddress!, count: dim) }
            }
          }
        }
      }
    }
  }
  return (tokens, count)
}

/// `window_unpartition`: the windows' tokens that lie on the grid, back in grid order; the
/// padding is dropped.
func mergeWindows(_ windows: Tensor, side: Int, window: Int) -> Tensor {
  let perSide = (side + window - 1) / window
  let dim = windows.dim(1)
  return Tensor(uninitializedShape: [side * side, dim]) { out in
    windows.withUnsafeBufferPointer { src in
      let (s, o) = (src.baseAddress!, out.baseAddress!)
      Parallel.forEach(count: side, costPerItem: side * dim) { y in
        for x in 0..<side {
          let (wy, ty, wx, tx) = (y / window, y % window, x / window, x % window)
          let w = wy * perSide + wx
          (o + (y * side + x) * dim).update(
            from: s + ((w * window + ty) * window + tx) * dim, count: dim)
        }
      }
    }
  }
}
