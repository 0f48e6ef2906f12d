import EVTensor

/// The output upscaling's first transposed convolution, folded through the transformer's last
/// LayerNorms so that most of its work is done once per image.
///
/// The image tokens leaving the transformer are `K_L`, built block by block as
/// `S_l = K_l + P_l·U_l + b_l`, `K_{l+1} = ρ_l·(S_l·J·Γ_l) + β_l` (J centres a row, Γ_l and
/// β_l are the block's `norm4`, ρ_l its per-token `1/σ`, P_l the image→token attention
/// probabilities and U_l the folded values, see `DecoderAttention`). The convolution is a
/// per-token matrix W (E × 4·64) plus bias c, and everything above is linear per token apart
/// from the scalars ρ_l, so with `W_{L−1} = JΓ_{L−1}W` and `W_l = JΓ_l·W_{l+1}`:
///
///     K_L·W + c = ρ_{L−1}·(s_0·(K_0·W_0 + r_0) + Σ_{l≥1} s_l·e_l + Σ_l s_l·P_l·(U_l·W_l)) + e_L
///
/// where `s_l = ρ_l·…·ρ_{L−2}` (s_{L−1} = 1), `r_0 = W_0ᵀb_0`, `e_l = W_lᵀ(β_{l−1} + b_l)` and
/// `e_L = Wᵀβ_{L−1} + c`. K_0 (embedding + no-mask embedding) is the same for every prompt, so
/// `K_0·W_0` (4096×256×256 multiply-adds) is computed once per image; each prompt then pays
/// for one N × (L·8T) by (L·8T) × 256 product instead of N × 256 × 256 (for one point, T = 7:
/// 117 M instead of 268 M multiply-adds). Exact in real arithmetic; in float it differs from
/// the direct order by rounding only, which the golden tests bound.
struct UpscaleFold: Sendable {
  /// W_l for every transformer block, each E × 256.
  let maps: [DecoderBuffer]
  /// `maps`, packed for the per-prompt products.
  let packedMaps: [PackedMatrix]
  /// r_0, then e_l for l = 1…L−1, each 256 values.
  let offsets: [DecoderBuffer]
  /// e_L, 256 values.
  let final: DecoderBuffer

  var depth: Int { maps.count }

  /// - Parameters:
  ///   - weight: the convolution as an E × columns matrix; `bias`: its per-column bias.
  init(transformer: TwoWayTransformer, weight: DecoderBuffer, bias: [Float], columns: Int) {
    let e = transformer.embedding
    let layers = transformer.layers
    func column(_ v: UnsafePointer<Float>) -> [Double] { (0..<e).map { Double(v[$0]) } }
    // Row a of J·diag(γ)·M is γ_a·M_a minus the mean over a of those rows.
    func centredScaled(_ m: [Double], _ gamma: UnsafePointer<Float>) -> [Double] {
      var r = [Double](repeating: 0, count: e * columns)
      var mean = [Double](repeating: 0, count: columns)
      for a in 0..<e {
        for c in 0..<columns {
          r[a * columns + c] = Double(gamma[a]) * m[a * columns + c]
          mean[c] += r[a * columns + c]
        }
      }
      for a in 0..<e {
        for c in 0..<columns { r[a * columns + c] -= mean[c] / Double(e) }
      }
      return r
    }
    func transposedTimes(_ m: [Double], _ v: [Double]) -> [Float] {
      var r = [Double](repeating: 0, count: columns)
      for a in 0..<e {
        for c in 0..<columns { r[c] += m[a * columns + c] * v[a] }
      }
      return r.map { Float($0) }
    }
    let w = (0..<(e * columns)).map { Double(weight.base[$0]) }
    var maps = [[Double]](repeating: [], count: layers.count)
    var next = w
    for l in stride(from: layers.count - 1, through: 0, by: -1) {
      maps[l] = centredScaled(next, layers[l].norm4.weight.base)
      next = maps[l]
    }
    var offsets = [
      DecoderBuffer(transposedTimes(maps[0], column(layers[0].imageToTokens.out.bias.base)))
    ]
    for l in 1..<layers.count {
      let beta = column(layers[l - 1].norm4.bias.base)
      let b = column(layers[l].imageToTokens.out.bias.base)
      offsets.append(DecoderBuffer(transposedTimes(maps[l], zip(beta, b).map { $0 + $1 })))
    }
    let last = transposedTimes(w, column(layers[layers.count - 1].norm4.bias.base))
    self.maps = maps.map { DecoderBuffer($0.map { Float($0) }) }
    packedMaps = self.maps.map { PackedMatrix($0.base, rows: e, columns: columns, ld: columns) }
    self.offsets = offsets
    final = DecoderBuffer(zip(last, bias).map { $0 + $1 })
  }
}

extension MaskDecoder {
  /// Image tokens per block of the upscaling pipeline: a quarter of a row of the 64×64 grid, so
  /// a block's intermediate tensors (16 KB of first-convolution output, 32 KB of second) stay
  /// in the core's L1/L2 (32 tokens measured ≈ 0.5 % slower, 8 tokens 4 % slower).
  static let upscaleBlock = 16

  /// Where the upscaling pipeline gets its first convolution's input from.
  enum UpscaleSource {
    /// The transformer's output image tokens, N×E.
    case keys(UnsafePointer<Float>)
    /// The folded form (`UpscaleFold`): the per-image `K_0·W_0` (N×256), the trace of this
    /// prompt's transformer run, and `mixing` = [U_0·W_0; U_1·W_1] ((2·8T) × 256).
    case folded(base: UnsafePointer<Float>, trace: FoldTrace, mixing: PackedMatrix)
  }

  /// [U_0·W_0; U_1·W_1] for one prompt's trace, packed.
  func foldMixing(_ trace: FoldTrace, workspace: DecoderWorkspace) -> PackedMatrix {
    let e = Self.embedding
    let width = 4 * Self.upscaledChannels[0]
    let hT = 8 * trace.tokens
    let mixing = workspace.buffer("upscaleMixing", count: 2 * hT * width)
    if let valueMaps {
      // U_l·W_l = V_l·(O_l·W_l) (see `ValueMaps`).
      var v = UnsafePointer(trace.headValues)
      for (l, attention) in transformer.layers.map(\.imageToTokens).enumerated() {
        ValueMaps.headTimes(
          v, count: trace.tokens, headDim: attention.headDim,
          l == 0 ? valueMaps.upscale.0 : valueMaps.upscale.1, into: mixing + l * hT * width,
          ldo: width)
        v += trace.tokens * attention.internalDim
      }
    } else {
      for l in 0..<2 {
        SmallGEMM.parallelMultiply(
          m: hT, k: e, a: trace.values + l * hT * e, lda: e, b: upscaleFold.packedMaps[l],
          c: mixing + l * hT * width, ldc: width)
      }
    }
    return PackedMatrix(mixing, rows: 2 * hT, columns: width, ld: width)
  }

  /// `output_upscaling` and the hypernetwork product for one prompt.
  ///
  /// Each of the 64×64 image tokens expands, independently of the others, into a 4×4 patch of
  /// the 256×256 mask: ConvTranspose2d(2, 2) gives 4 sub-pixels of 64 channels (LayerNorm2d over
  /// those channels, GELU), the second gives 4 sub-pixels of 32 channels each (GELU), and each
  /// mask is the dot product of those 32 channels with its hypernetwork vector. So the chain
  /// runs on blocks of tokens, each block's products and activations in cache on one core, and
  /// scatters straight into image order. Every step is split-invariant, so the masks do not
  /// depend on the number of threads.
  func upscaleMasks(
    _ source: UpscaleSource, hyper: UnsafePointer<Float>, count: Int,
    into out: UnsafeMutablePointer<Float>
  ) {
    let e = Self.embedding
    let n = Self.imageTokens
    let (c1, c2) = (Self.upscaledChannels[0], Self.upscaledChannels[1])
    let width = 4 * c1
    let tb = Self.upscaleBlock
    let blocks = (n + tb - 1) / tb
    let side = Self.side
    let maskSide = Self.maskSide
    let plane = maskSide * maskSide
    Parallel.forRanges(count: blocks, costPerItem: tb * width * (e + 2 * c2)) { range in
      let y = UnsafeMutablePointer<Float>.allocate(capacity: tb * width)
      let z = UnsafeMutablePointer<Float>.allocate(capacity: 4 * tb * 4 * c2)
      let m = UnsafeMutablePointer<Float>.allocate(capacity: 16 * tb * count)
      defer {
        y.deallocate()
        z.deallocate()
        m.deallocate()
      }
      for block in range {
        let p0 = block * tb
        let rows = min(tb, n - p0)
        switch source {
        case .keys(let keys):
          SmallGEMM.multiply(
            m: rows, k: e, a: keys + p0 * e, lda: e, b: upscale1Packed, c: y, ldc: width)
          RowOps.layerNorm(
            y, y, rows: 4 * rows, dim: c1, weight: upscaleNormWeight.base,
            bias: upscaleNormBias.base, eps: DecoderLayerNorm.eps, preBias: upscale1Bias.base,
            gelu: true, serial: true)
        case .folded(let base, let trace, let mixing):
          // y = ρ_1·(ρ_0·(K_0·W_0 + r_0) + e_1 + (ρ_0·P_0)·(U_0·W_0) + P_1·(U_1·W_1)) + e_2
          // (see `UpscaleFold`): the product here, the rest fused with the LayerNorm.
          let ldP = 2 * 8 * trace.tokens
          SmallGEMM.multiply(
            m: rows, k: ldP, a: trace.probabilities + p0 * ldP, lda: ldP, b: mixing, c: y,
            ldc: width)
          HeadAttention.foldedLayerNormGELU(
            y, base: base + p0 * width, tokens: rows, innerScale: trace.rstd + p0,
            outerScale: trace.rstd + n + p0, innerOffset: upscaleFold.offsets[0].base,
            middleOffset: upscaleFold.offsets[1].base, outerOffset: upscaleFold.final.base,
            weight: upscaleNormWeight.base, bias: upscaleNormBias.base, eps: DecoderLayerNorm.eps)
        }
        SmallGEMM.multiply(m: 4 * rows, k: c1, a: y, lda: c1, b: upscale2Packed, c: z, ldc: 4 * c2)
        HeadAttention.geluDot(
          z, rows: 16 * rows, width: c2, bias: upscale2Bias.base, vectors: hyper, count: count,
          into: m)
        // Row r = ((token·4 + s1)·4 + s2) of z (as 16·rows × 32) is mask pixel
        // (4i + 2·dy1 + dy2, 4j + 2·dx1 + dx2) for token (i, j),
        // where s1 = dy1·2 + dx1 and s2 = dy2·2 + dx2. Written as whole runs of mask rows:
        // the block's tokens within one token row fill 4 consecutive pixels each of 4 rows.
        var local = 0
        while local < rows {
          let (i, j0) = (p0 + local).quotientAndRemainder(dividingBy: side)
          let run = min(rows - local, side - j0)
          for c in 0..<count {
            for dy in 0..<4 {
              let o = out + c * plane + (4 * i + dy) * maskSide + 4 * j0
              // s1 = 2·(dy >> 1) + dx1, s2 = 2·(dy & 1) + dx2.
              let first = m + ((local * 4 + 2 * (dy >> 1)) * 4 + 2 * (dy & 1)) * count + c
              for k in 0..<run {
                let src = first + 16 * count * k
                o[4 * k] = src[0]
                o[4 * k + 1] = src[count]
                o[4 * k + 2] = src[4 * count]
                o[4 * k + 3] = src[5 * count]
              }
            }
          }
          local += run
        }
      }
    }
  }
}
