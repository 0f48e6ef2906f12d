import CKernels

/// Winograd F(4×4, 3×3) convolution for dense 3×3 convs with stride 1 and padding 1, the convs
/// that dominate EfficientViT-SAM (ResBlock, FusedMBConv, the neck).
///
/// Each 4×4 block of outputs is computed from a 6×6 input patch in a transformed domain where the
/// convolution becomes 36 independent element-wise products, i.e. 36 GEMMs
/// `M[ξ] (O×tiles) = U[ξ] (O×C) · V[ξ] (C×tiles)`. That is 36 multiplies per 16 outputs instead of
/// 9·16 = 144: 4× fewer MACs, for a few transform passes that cost little next to the GEMMs.
///
/// Interpolation points 0, ±1, ±2 (Lavin & Gray). In float32 the transforms add rounding of
/// order 1e-6 relative to the output scale, well inside the 1e-4 golden tolerance.
public struct WinogradWeights: Sendable {
  public let outChannels: Int
  public let inChannels: Int
  /// [36][O][C]: the transformed kernels G·g·Gᵀ, one O×C matrix per transform position.
  let u: [Float]

  /// Transforms `weight` [O, C, 3, 3] (computed in Double, rounded once).
  public init(weight: Tensor) {
    precondition(
      weight.rank == 4 && weight.dim(2) == 3 && weight.dim(3) == 3,
      "WinogradWeights: weight must be [O, C, 3, 3], got \(weight.shape)")
    let (o, c) = (weight.dim(0), weight.dim(1))
    outChannels = o
    inChannels = c
    let g: [[Double]] = [
      [1.0 / 4, 0, 0],
      [-1.0 / 6, -1.0 / 6, -1.0 / 6],
      [-1.0 / 6, 1.0 / 6, -1.0 / 6],
      [1.0 / 24, 1.0 / 12, 1.0 / 6],
      [1.0 / 24, -1.0 / 12, 1.0 / 6],
      [0, 0, 1],
    ]
    var u = [Float](repeating: 0, count: 36 * o * c)
    let w = weight.storage
    for oc in 0..<o {
      for ic in 0..<c {
        let k = (oc * c + ic) * 9
        // t = G·k (6×3), then G·k·Gᵀ (6×6).
        var t = [Double](repeating: 0, count: 18)
        for i in 0..<6 {
          for j in 0..<3 {
            t[i * 3 + j] =
              g[i][0] * Double(w[k + j]) + g[i][1] * Double(w[k + 3 + j])
              + g[i][2] * Double(w[k + 6 + j])
          }
        }
        for i in 0..<6 {
          for j in 0..<6 {
            let v = t[i * 3] * g[j][0] + t[i * 3 + 1] * g[j][1] + t[i * 3 + 2] * g[j][2]
            u[((i * 6 + j) * o + oc) * c + ic] = Float(v)
          }
        }
      }
    }
    self.u = u
  }

  /// Whether `conv2d(x, weight, stride: stride, padding: padding, groups: groups)` with a kernel of
  /// `kernelSize` is worth doing this way: a dense 3×3 "same" conv with enough channels for the
  /// GEMMs to dominate the transforms. At 32 channels (stage 0 of every model) the transforms
  /// and the 4.5× larger transformed arrays cost more than the saved multiply-adds.
  public static func applies(
    kernelSize: Int, stride: Int, padding: Int, groups: Int, inChannels: Int, outChannels: Int
  ) -> Bool {
    kernelSize == 3 && stride == 1 && padding == 1 && groups == 1 && inChannels >= 64
      && outChannels >= 64
  }
}

/// conv2d(x, weight, bias, stride: 1, padding: 1) + activation, by Winograd F(4×4, 3×3).
public func conv2dWinograd(
  _ x: Tensor, weights: WinogradWeights, bias: Tensor?, activation: Activation = .identity
) -> Tensor {
  precondition(
    x.rank == 4 && x.dim(1) == weights.inChannels,
    "conv2dWinograd: input \(x.shape) for \(weights.inChannels) input channels")
  let (batch, c, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3))
  let o = weights.outChannels
  if let bias {
    precondition(bias.count == o, "conv2dWinograd: bias has \(bias.count) values for \(o) channels")
  }
  let tilesH = (h + 3) / 4
  let tilesW = (w + 3) / 4
  let tiles = tilesH * tilesW
  // Tiles per block: V and M of a block ([36][C][tb] and [36][O][tb]) stay under ~48 MB and
  // blocks are of equal size, so no GEMM gets a narrow leftover N. Wide blocks matter more
  // than keeping V and M in the L3: the neck's 256 → 1024 convs at 64² run as one block of 256
  // tiles, whose products are ≈ 20 % faster than two of 128 (docs/PERFORMANCE.md).
  let budget = 12 << 20
  let maxBlock = max(16, budget / (36 * (c + o)))
  let blocks = (tiles + maxBlock - 1) / maxBlock
  let blockTiles = (tiles + blocks - 1) / blocks
  return Tensor(uninitializedShape: [batch, o, h, w]) { out in
    guard out.count > 0 else { return }
    let v = UnsafeMutablePointer<Float>.allocate(capacity: 36 * c * blockTiles)
    let m = UnsafeMutablePointer<Float>.allocate(capacity: 36 * o * blockTiles)
    defer {
      v.deallocate()
      m.deallocate()
    }
    x.withUnsafeBufferPointer { px in
      weights.u.withUnsafeBufferPointer { pu in
        withOptionalPointer(bias) { pb in
          let (src, u, dst) = (px.baseAddress!, pu.baseAddress!, out.baseAddress!)
          for n in 0..<batch {
            let image = src + n * c * h * w
            let output = dst + n * o * h * w
            var t0 = 0
            while t0 < tiles {
              let tb = min(blockTiles, tiles - t0)
              let first = t0
              Parallel.forEach(count: c, costPerItem: tb * 200) { ch in
                WinogradTransform.input(
                  image + ch * h * w, height: h, width: w, tilesW: tilesW, firstTile: first,
                  count: tb, into: v + ch * tb, matrixStride: c * tb)
              }
              Parallel.forEach(count: 36, costPerItem: o * c * tb) { xi in
                BLAS.serialSgemm(
                  transA: false, transB: false, m: o, n: tb, k: c, alpha: 1,
                  a: u + xi * o * c, lda: c, b: v + xi * c * tb, ldb: tb,
                  beta: 0, c: m + xi * o * tb, ldc: tb)
              }
              Parallel.forEach(count: o, costPerItem: tb * 300) { oc in
                WinogradTransform.output(
                  m + oc * tb, matrixStride: o * tb, count: tb, firstTile: first, tilesW: tilesW,
                  bias: pb?[oc] ?? 0, activation,
                  into: output + oc * h * w, height: h, width: w)
              }
              t0 += tb
            }
          }
        }
      }
    }
  }
}

/// The two transforms of `conv2dWinograd` for a run of tiles of one channel plane: AVX-512 C
/// kernels where the CPU has them (`evk_winograd_input` / `_output`), the Swift loops below
/// elsewhere, with bit-for-bit the same results. Public so that tests can hold the two
/// against each other (`SIMDLevel.capped`).
public enum WinogradTransform {
  /// V[ξ][k] = (Bᵀ·d·B)[ξ] for the zero-padded 6×6 patch d of tile `firstTile + k` (k < count)
  /// of an h × w plane with `tilesW` tiles per row, stored at `into[ξ·matrixStride + k]`.
  public static func input(
    _ plane: UnsafePointer<Float>, height h: Int, width w: Int, tilesW: Int, firstTile: Int,
    count: Int, into v: UnsafeMutablePointer<Float>, matrixStride: Int
  ) {
    if evk_winograd_input(plane, h, w, tilesW, firstTile, count, v, matrixStride) != 0 { return }
    winogradInputTransform(
      plane, height: h, width: w, tilesW: tilesW, firstTile: firstTile, count: count, into: v,
      matrixStride: matrixStride)
  }

  /// act(Aᵀ·M·A + bias) for those tiles of one output channel (M[ξ] of tile k at
  /// `m[ξ·matrixStride + k]`), stored into the h × w plane, edge tiles cropped.
  public static func output(
    _ m: UnsafePointer<Float>, matrixStride: Int, count: Int, firstTile: Int, tilesW: Int,
    bias: Float, _ act: Activation, into plane: UnsafeMutablePointer<Float>, height h: Int,
    width w: Int
  ) {
    if let code = act.epilogueCode,
      evk_winograd_output(m, matrixStride, count, firstTile, tilesW, bias, code, plane, h, w) != 0
    {
      return
    }
    winogradOutputTransform(
      m, matrixStride: matrixStride, count: count, firstTile: firstTile, tilesW: tilesW,
      bias: bias, act, into: plane, height: h, width: w)
  }
}

/// Tiles a transform handles together: every formula runs as one loop over this many tiles, which
/// vectorises, where per-tile code would be scalar.
let winogradLanes = 64

/// V[ξ][t] = (Bᵀ·d·B)[ξ] for the 6×6 zero-padded patch d of each tile t of one channel plane.
/// Element ξ of tile t goes to `into[ξ·matrixStride + t]`.
@inline(__always)
private func winogradInputTransform(
  _ plane: UnsafePointer<Float>, height h: Int, width w: Int, tilesW: Int, firstTile: Int,
  count: Int, into v: UnsafeMutablePointer<Float>, matrixStride: Int
) {
  let lanes = winogradLanes
  withUnsafeTemporaryAllocation(of: Float.self, capacity: 72 * lanes) { scratch in
    // d[p][lane]: the 36 patch values of each tile; r[p][lane]: Bᵀ·d.
    let d = scratch.baseAddress!
    let r = d + 36 * lanes
    var i0 = 0
    while i0 < count {
      let n = min(lanes, count - i0)
      for l in 0..<n {
        let t = firstTile + i0 + l
        let y0 = (t / tilesW) * 4 - 1
        let x0 = (t % tilesW) * 4 - 1
        if y0 >= 0 && x0 >= 0 && y0 + 6 <= h && x0 + 6 <= w {
          for a in 0..<6 {
            let row = plane + (y0 + a) * w + x0
            for b in 0..<6 { d[(a * 6 + b) * lanes + l] = row[b] }
          }
        } else {
          for a in 0..<6 {
            let y = y0 + a
            for b in 0..<6 {
              let xx = x0 + b
              d[(a * 6 + b) * lanes + l] =
                (y >= 0 && y < h && xx >= 0 && xx < w) ? plane[y * w + xx] : 0
            }
          }
        }
      }
      // Rows: r = Bᵀ·d.
      for b in 0..<6 {
        let (d0, d1, d2) = (d + b * lanes, d + (6 + b) * lanes, d + (12 + b) * lanes)
        let (d3, d4, d5) = (d + (18 + b) * lanes, d + (24 + b) * lanes, d + (30 + b) * lanes)
        let (r0, r1, r2) = (r + b * lanes, r + (6 + b) * lanes, r + (12 + b) * lanes)
        let (r3, r4, r5) = (r + (18 + b) * lanes, r + (24 + b) * lanes, r + (30 + b) * lanes)
        for l in 0..<n {
          r0[l] = 4 * d0[l] - 5 * d2[l] + d4[l]
          r1[l] = -4 * (d1[l] + d2[l]) + d3[l] + d4[l]
          r2[l] = 4 * (d1[l] - d2[l]) - d3[l] + d4[l]
          r3[l] = -2 * (d1[l] - d3[l]) - d2[l] + d4[l]
          r4[l] = 2 * (d1[l] - d3[l]) - d2[l] + d4[l]
          r5[l] = 4 * d1[l] - 5 * d3[l] + d5[l]
        }
      }
      // Columns: r·B, written out per transform position.
      for a in 0..<6 {
        let q = r + a * 6 * lanes
        let (q0, q1, q2) = (q, q + lanes, q + 2 * lanes)
        let (q3, q4, q5) = (q + 3 * lanes, q + 4 * lanes, q + 5 * lanes)
        let base = v + (a * 6) * matrixStride + i0
        let (v0, v1, v2) = (base, base + matrixStride, base + 2 * matrixStride)
        let (v3, v4, v5) = (
          base + 3 * matrixStride, base + 4 * matrixStride, base + 5 * matrixStride
        )
        for l in 0..<n {
          v0[l] = 4 * q0[l] - 5 * q2[l] + q4[l]
          v1[l] = -4 * (q1[l] + q2[l]) + q3[l] + q4[l]
          v2[l] = 4 * (q1[l] - q2[l]) - q3[l] + q4[l]
          v3[l] = -2 * (q1[l] - q3[l]) - q2[l] + q4[l]
          v4[l] = 2 * (q1[l] - q3[l]) - q2[l] + q4[l]
          v5[l] = 4 * q1[l] - 5 * q3[l] + q5[l]
        }
      }
      i0 += n
    }
  }
}

/// Y = Aᵀ·M·A (4×4) for each tile of one output channel, plus bias and activation, stored into
/// the output plane (cropped at the right and bottom edges).
@inline(__always)
private func winogradOutputTransform(
  _ m: UnsafePointer<Float>, matrixStride: Int, count: Int, firstTile: Int, tilesW: Int,
  bias: Float, _ act: Activation, into plane: UnsafeMutablePointer<Float>, height h: Int,
  width w: Int
) {
  let lanes = winogradLanes
  withUnsafeTemporaryAllocation(of: Float.self, capacity: 40 * lanes) { scratch in
    // r[4×6][lane] = Aᵀ·M, y[4×4][lane] = r·A.
    let r = scratch.baseAddress!
    let y = r + 24 * lanes
    var i0 = 0
    while i0 < count {
      let n = min(lanes, count - i0)
      for b in 0..<6 {
        let p = m + b * matrixStride + i0
        let (m0, m1, m2) = (p, p + 6 * matrixStride, p + 12 * matrixStride)
        let (m3, m4, m5) = (p + 18 * matrixStride, p + 24 * matrixStride, p + 30 * matrixStride)
        let (r0, r1, r2, r3) = (
          r + b * lanes, r + (6 + b) * lanes, r + (12 + b) * lanes, r + (18 + b) * lanes
        )
        for l in 0..<n {
          let s12 = m1[l] + m2[l]
          let d12 = m1[l] - m2[l]
          let s34 = m3[l] + m4[l]
          let d34 = m3[l] - m4[l]
          r0[l] = m0[l] + s12 + s34
          r1[l] = d12 + 2 * d34
          r2[l] = s12 + 4 * s34
          r3[l] = d12 + 8 * d34 + m5[l]
        }
      }
      for a in 0..<4 {
        let q = r + a * 6 * lanes
        let (q0, q1, q2) = (q, q + lanes, q + 2 * lanes)
        let (q3, q4, q5) = (q + 3 * lanes, q + 4 * lanes, q + 5 * lanes)
        let (y0, y1, y2, y3) = (
          y + (a * 4) * lanes, y + (a * 4 + 1) * lanes, y + (a * 4 + 2) * lanes,
          y + (a * 4 + 3) * lanes
        )
        for l in 0..<n {
          let s12 = q1[l] + q2[l]
          let d12 = q1[l] - q2[l]
          let s34 = q3[l] + q4[l]
          let d34 = q3[l] - q4[l]
          y0[l] = q0[l] + s12 + s34
          y1[l] = d12 + 2 * d34
          y2[l] = s12 + 4 * s34
          y3[l] = d12 + 8 * d34 + q5[l]
        }
      }
      if n == lanes {
        applyBiasActivation(y, count: 16 * lanes, bias: bias, act)
      } else {
        for e in 0..<16 { applyBiasActivation(y + e * lanes, count: n, bias: bias, act) }
      }
      for l in 0..<n {
        let t = firstTile + i0 + l
        let oy = (t / tilesW) * 4
        let ox = (t % tilesW) * 4
        let rows = min(4, h - oy)
        let cols = min(4, w - ox)
        for a in 0..<rows {
          let dst = plane + (oy + a) * w + ox
          for b in 0..<cols { dst[b] = y[(a * 4 + b) * lanes + l] }
        }
      }
      i0 += n
    }
  }
}
