/// The official mask post-processing of one 256×256 logit mask, fused and streamed.
///
/// The official generator upscales every mask to the crop's size (bilinear 256 → 1024, keep the
/// top-left `inputSize`, bilinear to the crop size), then thresholds it three times (stability
/// score at ±offset, the mask at 0). Done literally that is a 1024×1024 float image per mask.
/// Here each output row is produced on demand from at most two rows of each intermediate stage,
/// with exactly the arithmetic of `MaskPostprocessing.upscale` (PyTorch's `upsample_bilinear2d`
/// taps and weights, horizontal sum first, then vertical), so the logits, and therefore every
/// count and mask pixel, are bit-identical; the intermediate images never exist.
public struct MaskUpscaler: Sendable {
  public static let lowResSide = 256
  static let frameSide = 1024

  public let inputHeight: Int
  public let inputWidth: Int
  public let outputHeight: Int
  public let outputWidth: Int
  /// 256 → 1024 taps, only for the first `inputHeight` rows / `inputWidth` columns.
  let stage1Rows: Taps
  let stage1Columns: Taps
  /// `inputSize` → crop size.
  let stage2Rows: Taps
  let stage2Columns: Taps

  /// - Parameters:
  ///   - inputSize: the image's extent in the 1024 prompt frame (`SamPredictor.inputSize`).
  ///   - outputSize: the size of the image (or crop) the masks are for.
  public init(inputSize: (height: Int, width: Int), outputSize: (height: Int, width: Int)) {
    precondition(
      inputSize.height > 0 && inputSize.height <= Self.frameSide && inputSize.width > 0
        && inputSize.width <= Self.frameSide,
      "MaskUpscaler: input size \(inputSize) outside the frame")
    precondition(
      outputSize.height > 0 && outputSize.width > 0, "MaskUpscaler: empty output \(outputSize)")
    (inputHeight, inputWidth) = inputSize
    (outputHeight, outputWidth) = outputSize
    stage1Rows = Taps(input: Self.lowResSide, output: Self.frameSide, first: inputHeight)
    stage1Columns = Taps(input: Self.lowResSide, output: Self.frameSide, first: inputWidth)
    stage2Rows = Taps(input: inputHeight, output: outputHeight, first: outputHeight)
    stage2Columns = Taps(input: inputWidth, output: outputWidth, first: outputWidth)
  }

  /// PyTorch's bilinear (align_corners=False) taps for the first `first` outputs: source index
  /// pairs and float32 weights, formed as `upsample_bilinear2d` forms them.
  struct Taps: Sendable {
    var i0: [Int]
    var i1: [Int]
    var w0: [Float]
    var w1: [Float]

    init(input: Int, output: Int, first: Int) {
      (i0, i1, w0, w1) = ([], [], [], [])
      let scale = Float(input) / Float(output)
      for dst in 0..<first {
        if input == output {
          (i0, i1, w0, w1) = (i0 + [dst], i1 + [dst], w0 + [1], w1 + [0])
          continue
        }
        let real = max(scale * (Float(dst) + 0.5) - 0.5, 0)
        let a = min(Int(real.rounded(.down)), input - 1)
        let lambda = min(max(real - Float(a), 0), 1)
        i0.append(a)
        i1.append(a + (a < input - 1 ? 1 : 0))
        w0.append(1 - lambda)
        w1.append(lambda)
      }
    }
  }

  /// Thresholds one upscaled mask: counts of `logit > high` and `logit > low`, and the
  /// row-major mask `logit > maskThreshold` (1 / 0), for 256×256 `logits`.
  public func threshold(_ logits: [Float], high: Float, low: Float, maskThreshold: Float = 0)
    -> (high: Int, low: Int, mask: [UInt8])
  {
    let side = Self.lowResSide
    precondition(
      logits.count == side * side,
      "MaskUpscaler: logits must be \(side)×\(side), got \(logits.count) values")
    var mask = [UInt8](repeating: 0, count: outputHeight * outputWidth)
    let counts = logits.withUnsafeBufferPointer { l in
      mask.withUnsafeMutableBufferPointer { m in
        run(
          l.baseAddress!, high: high, low: low, maskThreshold: maskThreshold,
          scratch: Scratch(self), mask: m.baseAddress!)
      }
    }
    return (counts.high, counts.low, mask)
  }

  /// Per-thread working memory.
  final class Scratch {
    /// Two stage-1 horizontal rows (inputWidth each) and their source row indices.
    let h1: UnsafeMutablePointer<Float>
    var h1Keys = [-1, -1]
    /// One stage-1 output row (inputWidth).
    let v1: UnsafeMutablePointer<Float>
    /// Two stage-2 horizontal rows (outputWidth each) and their stage-1 row indices.
    let h2: UnsafeMutablePointer<Float>
    var h2Keys = [-1, -1]
    /// One output row of logits (outputWidth).
    let row: UnsafeMutablePointer<Float>
    /// One row of a thresholded mask (outputWidth).
    let bytes: UnsafeMutablePointer<UInt8>
    let inputWidth: Int
    let outputWidth: Int

    init(_ plan: MaskUpscaler) {
      inputWidth = plan.inputWidth
      outputWidth = plan.outputWidth
      h1 = .allocate(capacity: 2 * inputWidth)
      v1 = .allocate(capacity: inputWidth)
      h2 = .allocate(capacity: 2 * outputWidth)
      row = .allocate(capacity: outputWidth)
      bytes = .allocate(capacity: outputWidth)
    }

    deinit {
      h1.deallocate()
      v1.deallocate()
      h2.deallocate()
      row.deallocate()
      bytes.deallocate()
    }

    func reset() {
      h1Keys = [-1, -1]
      h2Keys = [-1, -1]
    }
  }

  /// Counts of `logit > high` and `logit > low` over the upscaled mask, with the mask
  /// (`logit > maskThreshold`, 1 or 0) written row-major into `mask` (outputHeight × outputWidth).
  func run(
    _ logits: UnsafePointer<Float>, high: Float, low: Float, maskThreshold: Float,
    scratch: Scratch, mask: UnsafeMutablePointer<UInt8>
  ) -> (high: Int, low: Int) {
    scratch.reset()
    var highCount = 0
    var lowCount = 0
    let width = outputWidth
    let row = scratch.row
    stage2Rows.i0.withUnsafeBufferPointer { ri0 in
      stage2Rows.i1.withUnsafeBufferPointer { ri1 in
        stage2Rows.w0.withUnsafeBufferPointer { rw0 in
          stage2Rows.w1.withUnsafeBufferPointer { rw1 in
            for oy in 0..<outputHeight {
              let a = stage2Row(ri0[oy], keep: ri1[oy], logits, scratch)
              let b = stage2Row(ri1[oy], keep: ri0[oy], logits, scratch)
              let (w0, w1) = (rw0[oy], rw1[oy])
              for x in 0..<width {
                var v = a[x] * w0
                v += b[x] * w1
                row[x] = v
              }
              // Byte masks, then byte sums: loops the compiler vectorises (counting with a
              // conditional increment becomes a branch per pixel).
              let out = mask + oy * width
              for x in 0..<width { out[x] = row[x] > maskThreshold ? 1 : 0 }
              let bytes = scratch.bytes
              for x in 0..<width { bytes[x] = row[x] > high ? 1 : 0 }
              var h: UInt32 = 0
              for x in 0..<width { h &+= UInt32(bytes[x]) }
              for x in 0..<width { bytes[x] = row[x] > low ? 1 : 0 }
              var l: UInt32 = 0
              for x in 0..<width { l &+= UInt32(bytes[x]) }
              highCount += Int(h)
              lowCount += Int(l)
            }
          }
        }
      }
    }
    return (highCount, lowCount)
  }

  /// Stage-2 horizontal row `r` (stage-1 output row r resized to the output width), from the
  /// two-slot cache; computing it never evicts row `keep`.
  private func stage2Row(
    _ r: Int, keep: Int, _ logits: UnsafePointer<Float>, _ s: Scratch
  ) -> UnsafeMutablePointer<Float> {
    if s.h2Keys[0] == r { return s.h2 }
    if s.h2Keys[1] == r { return s.h2 + outputWidth }
    let slot =
      s.h2Keys[0] == keep ? 1 : s.h2Keys[1] == keep ? 0 : (s.h2Keys[0] < s.h2Keys[1] ? 0 : 1)
    s.h2Keys[slot] = r
    let dst = s.h2 + slot * outputWidth

    // Stage-1 vertical: row r of the 1024 image from two horizontal rows.
    let a = stage1Horizontal(stage1Rows.i0[r], keep: stage1Rows.i1[r], logits, s)
    let b = stage1Horizontal(stage1Rows.i1[r], keep: stage1Rows.i0[r], logits, s)
    let (w0, w1) = (stage1Rows.w0[r], stage1Rows.w1[r])
    let v1 = s.v1
    for x in 0..<inputWidth {
      var v = a[x] * w0
      v += b[x] * w1
      v1[x] = v
    }
    // Stage-2 horizontal.
    stage2Columns.i0.withUnsafeBufferPointer { c0 in
      stage2Columns.i1.withUnsafeBufferPointer { c1 in
        stage2Columns.w0.withUnsafeBufferPointer { w0 in
          stage2Columns.w1.withUnsafeBufferPointer { w1 in
            for x in 0..<outputWidth {
              var v = v1[c0[x]] * w0[x]
              v += v1[c1[x]] * w1[x]
              dst[x] = v
            }
          }
        }
      }
    }
    return dst
  }

  /// Stage-1 horizontal row: low-res row `r` resized to the 1024 frame's first `inputWidth`
  /// columns, from the two-slot cache; never evicts row `keep`.
  private func stage1Horizontal(
    _ r: Int, keep: Int, _ logits: UnsafePointer<Float>, _ s: Scratch
  ) -> UnsafeMutablePointer<Float> {
    if s.h1Keys[0] == r { return s.h1 }
    if s.h1Keys[1] == r { return s.h1 + inputWidth }
    let slot =
      s.h1Keys[0] == keep ? 1 : s.h1Keys[1] == keep ? 0 : (s.h1Keys[0] < s.h1Keys[1] ? 0 : 1)
    s.h1Keys[slot] = r
    let dst = s.h1 + slot * inputWidth
    let src = logits + r * Self.lowResSide
    stage1Columns.i0.withUnsafeBufferPointer { c0 in
      stage1Columns.i1.withUnsafeBufferPointer { c1 in
        stage1Columns.w0.withUnsafeBufferPointer { w0 in
          stage1Columns.w1.withUnsafeBufferPointer { w1 in
            for x in 0..<inputWidth {
              var v = src[c0[x]] * w0[x]
              v += src[c1[x]] * w1[x]
              dst[x] = v
            }
          }
        }
      }
    }
    return dst
  }
}
