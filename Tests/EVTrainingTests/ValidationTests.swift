import EVTraining
import Foundation
import Testing

/// `compute_iou` of the official validation: logits upsampled to the input size and
/// thresholded at 0, the soft target scaled by 255 and thresholded at 128, IoU with 1e-6.
@Suite struct ValidationTests {
  @Test func theTargetCountsAbove128Over255AndTheLogitsAbove0() {
    let side = 8
    // Constant logits: the upsampled map is the same constant everywhere.
    let positive = [Float](repeating: 2, count: 4 * 4)
    var target = [Float](repeating: 0, count: side * side)
    for i in 0..<16 { target[i] = 1 }
    for i in 16..<24 { target[i] = 0.503 }  // 128.27 > 128: inside
    for i in 24..<32 { target[i] = 0.5 }  // 127.5: outside
    let iou = Validation.maskIoU(
      lowRes: positive, height: 4, width: 4, target: target[...], side: side)
    #expect(abs(iou - 24.0 / (64.0 + 1e-6)) < 1e-12)

    let zero = [Float](repeating: 0, count: 16)
    #expect(
      Validation.maskIoU(lowRes: zero, height: 4, width: 4, target: target[...], side: side) == 0)
    // Nothing predicted and nothing true: 0 / (0 + 1e-6) = 0, as the official code gives.
    #expect(
      Validation.maskIoU(
        lowRes: zero, height: 4, width: 4, target: ArraySlice(repeating: 0, count: 64), side: side)
        == 0)
  }

  @Test func theUpsamplingIsBilinearWithoutAlignedCorners() {
    // Left half positive, right half negative at 2×2 → 4×4: align_corners=False puts the
    // sign change exactly between columns 1 and 2.
    let low: [Float] = [1, -1, 1, -1]
    var target = [Float](repeating: 0, count: 16)
    for y in 0..<4 { for x in 0..<2 { target[y * 4 + x] = 1 } }
    let iou = Validation.maskIoU(lowRes: low, height: 2, width: 2, target: target[...], side: 4)
    #expect(abs(iou - 8 / (8 + 1e-6)) < 1e-12)
  }
}
