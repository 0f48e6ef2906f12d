import EVTensor

/// The geometry of one `nn.Conv2d` on N × C × H × W (square kernel, symmetric padding).
package struct ConvGeometry: Sendable, Equatable {
  package var batch: Int
  package var inChannels: Int
  package var height: Int
  package var width: Int
  package var outChannels: Int
  package var kernel: Int
  package var stride: Int
  package var padding: Int
  package var groups: Int

  package init(
    batch: Int, inChannels: Int, height: Int, width: Int, outChannels: Int, kernel: Int,
    stride: Int = 1, padding: Int = 0, groups: Int = 1
  ) {
    precondition(inChannels % groups == 0 && outChannels % groups == 0)
    self.batch = batch
    self.inChannels = inChannels
    self.height = height
    self.width = width
    self.outChannels = outChannels
    self.kernel = kernel
    self.stride = stride
    self.padding = padding
    self.groups = groups
  }

  package var outHeight: Int { (height + 2 * padding - kernel) / stride + 1 }
  package var outWidth: Int { (width + 2 * padding - kernel) / stride + 1 }
  var inPerGroup: Int { inChannels / groups }
  var outPerGroup: Int { outChannels / groups }
  var inPlane: Int { height * width }
  var outPlane: Int { outHeight * outWidth }
  /// Rows of the unfolded input of one group: `inPerGroup · k · k`.
  var patch: Int { inPerGroup * kernel * kernel }
  /// One filter per channel: computed directly, not as a product.
  var isDepthwise: Bool { groups == inChannels && groups == outChannels }
  /// The unfolded input is the input itself.
  var isPointwise: Bool { kernel == 1 && stride == 1 && padding == 0 }
  package var weightCount: Int { outChannels * patch }
}

/// The convolution's backward passes for training (its forward is the inference engine's
/// `conv2d`). Dense and grouped convolutions are products with the unfolded input (im2col),
/// through BLAS; depthwise ones run directly, row by row. `PlainGradients.conv2d` is the
/// float64 twin the tests hold these against.
enum ConvKernels {
  /// `dx += convᵀ(g, w)`.
  static func backwardInput(
    _ g: UnsafePointer<Float>, weight: UnsafePointer<Float>, _ s: ConvGeometry,
    into dx: UnsafeMutablePointer<Float>
  ) {
    let op = s.outPlane
    if s.isDepthwise {
      let cost = op * s.kernel * s.kernel
      Parallel.forRanges(count: s.batch * s.inChannels, costPerItem: cost) { planes in
        for plane in planes {
          let c = plane % s.inChannels
          depthwisePlaneInput(
            g + plane * op, weight + c * s.kernel * s.kernel, dx + plane * s.inPlane, s)
        }
      }
      return
    }
    withColumns(s, always: true) { col in
      for b in 0..<s.batch {
        for g0 in 0..<s.groups {
          let target = dx + (b * s.inChannels + g0 * s.inPerGroup) * s.inPlane
          // Pointwise: the column gradient is the input gradient, accumulated in place.
          let pointwise = s.isPointwise
          BLAS.sgemm(
            transA: true, transB: false, m: s.patch, n: op, k: s.outPerGroup, alpha: 1,
            a: weight + g0 * s.outPerGroup * s.patch, lda: s.patch,
            b: g + (b * s.outChannels + g0 * s.outPerGroup) * op, ldb: op,
            beta: pointwise ? 1 : 0, c: pointwise ? target : col!, ldc: op)
          if !pointwise { fold(col!, s, into: target) }
        }
      }
    }
  }

  /// `dw += Σ_batch g · unfold(x)ᵀ`; `db += Σ g` when asked.
  static func backwardWeight(
    _ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ s: ConvGeometry,
    into dw: UnsafeMutablePointer<Float>, bias db: UnsafeMutablePointer<Float>?
  ) {
    let op = s.outPlane
    if let db {
      Parallel.forRanges(count: s.outChannels, costPerItem: s.batch * op) { channels in
        for c in channels {
          var sum: Float = 0
          for b in 0..<s.batch {
            let row = g + (b * s.outChannels + c) * op
            for i in 0..<op { sum += row[i] }
          }
          db[c] += sum
        }
      }
    }
    if s.isDepthwise {
      // By channel: every image adds into the same filter.
      let cost = s.batch * op * s.kernel * s.kernel
      Parallel.forRanges(count: s.inChannels, costPerItem: cost) { channels in
        for c in channels {
          for b in 0..<s.batch {
            let plane = b * s.inChannels + c
            depthwisePlaneWeight(
              g + plane * op, x + plane * s.inPlane, dw + c * s.kernel * s.kernel, s)
          }
        }
      }
      return
    }
    withColumns(s) { col in
      for b in 0..<s.batch {
        for g0 in 0..<s.groups {
          let input = x + (b * s.inChannels + g0 * s.inPerGroup) * s.inPlane
          let columns = s.isPointwise ? UnsafePointer(input) : unfold(input, s, into: col!)
          BLAS.sgemm(
            transA: false, transB: true, m: s.outPerGroup, n: s.patch, k: op, alpha: 1,
            a: g + (b * s.outChannels + g0 * s.outPerGroup) * op, lda: op, b: columns, ldb: op,
            beta: 1, c: dw + g0 * s.outPerGroup * s.patch, ldc: s.patch)
        }
      }
    }
  }

  /// Scratch for one group's unfolded input (nil when the input is used as it is).
  private static func withColumns(
    _ s: ConvGeometry, always: Bool = false, _ body: (UnsafeMutablePointer<Float>?) -> Void
  ) {
    if s.isPointwise && !always {
      body(nil)
      return
    }
    let count = s.isPointwise ? 0 : s.patch * s.outPlane
    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
    defer { buffer.deallocate() }
    body(buffer)
  }

  /// im2col of one group: row `(c·k + ky)·k + kx`, column `oy·Wo + ox`, zeros in the padding.
  private static func unfold(
    _ x: UnsafePointer<Float>, _ s: ConvGeometry, into col: UnsafeMutablePointer<Float>
  ) -> UnsafePointer<Float> {
    let (k, ho, wo) = (s.kernel, s.outHeight, s.outWidth)
    Parallel.forRanges(count: s.inPerGroup, costPerItem: k * k * ho * wo) { channels in
      for c in channels { unfoldChannel(x + c * s.inPlane, c, s, into: col) }
    }
    return UnsafePointer(col)
  }

  private static func unfoldChannel(
    _ plane: UnsafePointer<Float>, _ c: Int, _ s: ConvGeometry,
    into col: UnsafeMutablePointer<Float>
  ) {
    let (k, ho, wo) = (s.kernel, s.outHeight, s.outWidth)
    for ky in 0..<k {
      for kx in 0..<k {
        let row = col + ((c * k + ky) * k + kx) * ho * wo
        let (lo, hi) = validRange(offset: kx - s.padding, stride: s.stride, size: s.width, wo)
        for oy in 0..<ho {
          let out = row + oy * wo
          let iy = oy * s.stride - s.padding + ky
          guard iy >= 0 && iy < s.height, lo < hi else {
            out.initialize(repeating: 0, count: wo)
            continue
          }
          out.initialize(repeating: 0, count: lo)
          let src = plane + iy * s.width + kx - s.padding
          if s.stride == 1 {
            for ox in lo..<hi { out[ox] = src[ox] }
          } else {
            for ox in lo..<hi { out[ox] = src[ox * s.stride] }
          }
          (out + hi).initialize(repeating: 0, count: wo - hi)
        }
      }
    }
  }

  /// col2im of one group, accumulated into `dx`.
  private static func fold(
    _ col: UnsafePointer<Float>, _ s: ConvGeometry, into dx: UnsafeMutablePointer<Float>
  ) {
    let (k, ho, wo) = (s.kernel, s.outHeight, s.outWidth)
    // Each channel folds into its own plane, so channels run concurrently.
    Parallel.forRanges(count: s.inPerGroup, costPerItem: k * k * ho * wo) { channels in
      for c in channels { foldChannel(col, c, s, into: dx + c * s.inPlane) }
    }
  }

  private static func foldChannel(
    _ col: UnsafePointer<Float>, _ c: Int, _ s: ConvGeometry,
    into plane: UnsafeMutablePointer<Float>
  ) {
    let (k, ho, wo) = (s.kernel, s.outHeight, s.outWidth)
    for ky in 0..<k {
      for kx in 0..<k {
        let row = col + ((c * k + ky) * k + kx) * ho * wo
        let (lo, hi) = validRange(offset: kx - s.padding, stride: s.stride, size: s.width, wo)
        guard lo < hi else { continue }
        for oy in 0..<ho {
          let iy = oy * s.stride - s.padding + ky
          guard iy >= 0 && iy < s.height else { continue }
          let src = row + oy * wo
          let dst = plane + iy * s.width + kx - s.padding
          if s.stride == 1 {
            for ox in lo..<hi { dst[ox] += src[ox] }
          } else {
            for ox in lo..<hi { dst[ox * s.stride] += src[ox] }
          }
        }
      }
    }
  }

  /// Output columns `lo..<hi` whose input column `ox·stride + offset` is inside `0..<size`.
  static func validRange(offset: Int, stride: Int, size: Int, _ outSize: Int) -> (Int, Int) {
    // ox·stride + offset ≥ 0  ⇔  ox ≥ ⌈−offset / stride⌉
    let lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride
    // ox·stride + offset ≤ size − 1  ⇔  ox ≤ ⌊(size − 1 − offset) / stride⌋
    let last = size - 1 - offset
    let hi = last < 0 ? 0 : min(outSize, last / stride + 1)
    return (min(lo, outSize), max(hi, min(lo, outSize)))
  }

  /// One channel of a depthwise convolution, accumulated into `y` (zeroed by the caller).
  private static func depthwisePlane(
    _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
    _ s: ConvGeometry
  ) {
    let (k, ho, wo) = (s.kernel, s.outHeight, s.outWidth)
    for ky in 0..<k {
      for kx in 0..<k {
        let tap = w[ky * k + kx]
        let (lo, hi) = validRange(offset: kx - s.padding, stride: s.stride, size: s.width, wo)
        guard lo < hi else { continue }
        for oy in 0..<ho {
          let iy = oy * s.stride - s.padding + ky
          guard iy >= 0 && iy < s.height else { continue }
          let src = x + iy * s.width + kx - s.padding
          let out = y + oy * wo
          if s.stride == 1 {
            for ox in lo..<hi { out[ox] += tap * src[ox] }
          } else {
            for ox in lo..<hi { out[ox] += tap * src[ox * s.stride] }
          }
        }
      }
    }
  }

  private static func depthwisePlaneInput(
    _ g: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
    _ s: ConvGeometry
  ) {
    let (k, ho, wo) = (s.kernel, s.outHeight, s.outWidth)
    for ky in 0..<k {
      for kx in 0..<k {
        let tap = w[ky * k + kx]
        let (lo, hi) = validRange(offset: kx - s.padding, stride: s.stride, size: s.width, wo)
        guard lo < hi else { continue }
        for oy in 0..<ho {
          let iy = oy * s.stride - s.padding + ky
          guard iy >= 0 && iy < s.height else { continue }
          let dst = dx + iy * s.width + kx - s.padding
          let src = g + oy * wo
          if s.stride == 1 {
            for ox in lo..<hi { dst[ox] += tap * src[ox] }
          } else {
            for ox in lo..<hi { dst[ox * s.stride] += tap * src[ox] }
          }
        }
      }
    }
  }

  private static func depthwisePlaneWeight(
    _ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ dw: UnsafeMutablePointer<Float>,
    _ s: ConvGeometry
  ) {
    let (k, ho, wo) = (s.kernel, s.outHeight, s.outWidth)
    for ky in 0..<k {
      for kx in 0..<k {
        let (lo, hi) = validRange(offset: kx - s.padding, stride: s.stride, size: s.width, wo)
        guard lo < hi else { continue }
        var sum: Float = 0
        for oy in 0..<ho {
          let iy = oy * s.stride - s.padding + ky
          guard iy >= 0 && iy < s.height else { continue }
          let src = x + iy * s.width + kx - s.padding
          let grad = g + oy * wo
          var row: Float = 0
          if s.stride == 1 {
            for ox in lo..<hi { row += grad[ox] * src[ox] }
          } else {
            for ox in lo..<hi { row += grad[ox] * src[ox * s.stride] }
          }
          sum += row
        }
        dw[ky * k + kx] += sum
      }
    }
  }
}
