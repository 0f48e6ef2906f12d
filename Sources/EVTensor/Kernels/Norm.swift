/// Normalisations and softmax. Reductions run in Float with eight interleaved partial sums, which
/// lets LLVM keep them in vector registers and also shortens the rounding chains.

/// Σ p[i] over a contiguous run.
@inline(__always)
func sum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
  var acc = (Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0))
  var i = 0
  while i + 8 <= n {
    acc.0 += p[i]
    acc.1 += p[i + 1]
    acc.2 += p[i + 2]
    acc.3 += p[i + 3]
    acc.4 += p[i + 4]
    acc.5 += p[i + 5]
    acc.6 += p[i + 6]
    acc.7 += p[i + 7]
    i += 8
  }
  var tail: Float = 0
  while i < n {
    tail += p[i]
    i += 1
  }
  return ((acc.0 + acc.4) + (acc.1 + acc.5)) + ((acc.2 + acc.6) + (acc.3 + acc.7)) + tail
}

/// Σ (p[i] − c)² over a contiguous run.
@inline(__always)
func sumSquaredDeviation(_ p: UnsafePointer<Float>, _ n: Int, from c: Float) -> Float {
  var acc = (Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0))
  var i = 0
  while i + 8 <= n {
    let d0 = p[i] - c
    let d1 = p[i + 1] - c
    let d2 = p[i + 2] - c
    let d3 = p[i + 3] - c
    let d4 = p[i + 4] - c
    let d5 = p[i + 5] - c
    let d6 = p[i + 6] - c
    let d7 = p[i + 7] - c
    acc.0 += d0 * d0
    acc.1 += d1 * d1
    acc.2 += d2 * d2
    acc.3 += d3 * d3
    acc.4 += d4 * d4
    acc.5 += d5 * d5
    acc.6 += d6 * d6
    acc.7 += d7 * d7
    i += 8
  }
  var tail: Float = 0
  while i < n {
    let d = p[i] - c
    tail += d * d
    i += 1
  }
  return ((acc.0 + acc.4) + (acc.1 + acc.5)) + ((acc.2 + acc.6) + (acc.3 + acc.7)) + tail
}

/// max p[i] over a non-empty contiguous run.
@inline(__always)
func maximum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
  var acc = (p[0], p[0], p[0], p[0], p[0], p[0], p[0], p[0])
  var i = 0
  while i + 8 <= n {
    acc.0 = p[i] > acc.0 ? p[i] : acc.0
    acc.1 = p[i + 1] > acc.1 ? p[i + 1] : acc.1
    acc.2 = p[i + 2] > acc.2 ? p[i + 2] : acc.2
    acc.3 = p[i + 3] > acc.3 ? p[i + 3] : acc.3
    acc.4 = p[i + 4] > acc.4 ? p[i + 4] : acc.4
    acc.5 = p[i + 5] > acc.5 ? p[i + 5] : acc.5
    acc.6 = p[i + 6] > acc.6 ? p[i + 6] : acc.6
    acc.7 = p[i + 7] > acc.7 ? p[i + 7] : acc.7
    i += 8
  }
  let m01 = acc.0 > acc.1 ? acc.0 : acc.1
  let m23 = acc.2 > acc.3 ? acc.2 : acc.3
  let m45 = acc.4 > acc.5 ? acc.4 : acc.5
  let m67 = acc.6 > acc.7 ? acc.6 : acc.7
  let m03 = m01 > m23 ? m01 : m23
  let m47 = m45 > m67 ? m45 : m67
  var m = m03 > m47 ? m03 : m47
  while i < n {
    if p[i] > m { m = p[i] }
    i += 1
  }
  return m
}

/// nn.LayerNorm over the last dimension, biased variance.
public func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float) -> Tensor {
  precondition(x.rank >= 1, "layerNorm: input must have a feature dimension")
  let d = x.dim(-1)
  precondition(
    weight.count == d && bias.count == d,
    "layerNorm: weight \(weight.shape) / bias \(bias.shape) do not match \(d) features of \(x.shape)"
  )
  let rows = d == 0 ? 0 : x.count / d
  return Tensor(uninitializedShape: x.shape) { out in
    guard out.count > 0 else { return }
    x.withUnsafeBufferPointer { px in
      weight.withUnsafeBufferPointer { pw in
        bias.withUnsafeBufferPointer { pb in
          let (src, dst, w, b) = (
            px.baseAddress!, out.baseAddress!, pw.baseAddress!, pb.baseAddress!
          )
          Parallel.forEach(count: rows, costPerItem: 4 * d) { r in
            let s = src + r * d
            let o = dst + r * d
            let mean = sum(s, d) / Float(d)
            let variance = sumSquaredDeviation(s, d, from: mean) / Float(d)
            let rstd = 1 / (variance + eps).squareRoot()
            for i in 0..<d { o[i] = (s[i] - mean) * rstd * w[i] + b[i] }
          }
        }
      }
    }
  }
}

/// efficientvit's LayerNorm2d: normalises each pixel's channel vector of NCHW.
/// Channels are strided by H·W, so the sums run over whole rows of pixels at once (vectorised
/// across pixels) instead of gathering one pixel's channels.
public func layerNorm2d(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float) -> Tensor {
  precondition(x.rank == 4, "layerNorm2d: input must be NCHW, got \(x.shape)")
  let (n, c) = (x.shape[0], x.shape[1])
  let hw = x.shape[2] * x.shape[3]
  precondition(
    weight.count == c && bias.count == c,
    "layerNorm2d: weight \(weight.shape) / bias \(bias.shape) do not match \(c) channels of \(x.shape)"
  )
  // Tasks are (image, block of pixels); blocks keep the per-pixel statistics in L1.
  let block = 256
  let blocksPerImage = (hw + block - 1) / block
  return Tensor(uninitializedShape: x.shape) { out in
    guard out.count > 0 else { return }
    x.withUnsafeBufferPointer { px in
      weight.withUnsafeBufferPointer { pw in
        bias.withUnsafeBufferPointer { pb in
          let (src, dst, w, b) = (
            px.baseAddress!, out.baseAddress!, pw.baseAddress!, pb.baseAddress!
          )
          Parallel.forEach(count: n * blocksPerImage, costPerItem: 5 * c * block) { task in
            let image = task / blocksPerImage
            let p0 = (task % blocksPerImage) * block
            let m = min(block, hw - p0)
            let s = src + image * c * hw + p0
            let o = dst + image * c * hw + p0
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * block) { scratch in
              let mean = scratch.baseAddress!
              let scale = mean + block
              mean.initialize(repeating: 0, count: m)
              scale.initialize(repeating: 0, count: m)
              for ch in 0..<c {
                let row = s + ch * hw
                for i in 0..<m { mean[i] += row[i] }
              }
              let invC = 1 / Float(c)
              for i in 0..<m { mean[i] *= invC }
              for ch in 0..<c {
                let row = s + ch * hw
                for i in 0..<m {
                  let dv = row[i] - mean[i]
                  scale[i] += dv * dv
                }
              }
              for i in 0..<m { scale[i] = 1 / (scale[i] * invC + eps).squareRoot() }
              for ch in 0..<c {
                let row = s + ch * hw
                let orow = o + ch * hw
                let (wc, bc) = (w[ch], b[ch])
                for i in 0..<m { orow[i] = (row[i] - mean[i]) * scale[i] * wc + bc }
              }
            }
          }
        }
      }
    }
  }
}

/// Softmax over the last dimension, with the row maximum subtracted first.
public func softmax(_ x: Tensor) -> Tensor {
  precondition(x.rank >= 1, "softmax: input must have at least one dimension")
  let d = x.dim(-1)
  let rows = d == 0 ? 0 : x.count / d
  return Tensor(uninitializedShape: x.shape) { out in
    guard out.count > 0 else { return }
    x.withUnsafeBufferPointer { px in
      let (src, dst) = (px.baseAddress!, out.baseAddress!)
      Parallel.forEach(count: rows, costPerItem: 16 * d) { r in
        let s = src + r * d
        let o = dst + r * d
        let m = maximum(s, d)
        for i in 0..<d { o[i] = fastExp(s[i] - m) }
        let inv = 1 / sum(o, d)
        for i in 0..<d { o[i] *= inv }
      }
    }
  }
}
