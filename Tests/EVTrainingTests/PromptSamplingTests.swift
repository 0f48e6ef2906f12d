import EVTensor
import EVTraining
import Foundation
import TestSupport
import Testing

/// The official choice of masks and prompts, checked by their properties (the official
/// streams are NumPy's and PyTorch's, which no port reproduces draw for draw).
@Suite struct PromptSamplingTests {
  @Test func exactly64MasksAsTheOfficialProviderChoosesThem() {
    var rng = SplitMix64(seed: 3)
    for n in [1, 5, 63, 64, 65, 200] {
      let picked = selectMasks(count: n, wanted: 64, using: &rng)
      #expect(picked.count == 64)
      #expect(picked.allSatisfy { (0..<n).contains($0) })
      if n > 64 {
        #expect(Set(picked).count == 64, "drawn without replacement")
      } else {
        // ⌊64/n⌋ copies in order, then 64 mod n distinct others.
        let copies = 64 / n
        #expect(Array(picked.prefix(copies * n)) == (0..<copies).flatMap { _ in Array(0..<n) })
        let rest = picked.dropFirst(copies * n)
        #expect(rest.count == 64 % n && Set(rest).count == rest.count)
      }
    }
  }

  @Test func pointsLieInTheirMasksAndSmallMasksFallBackToBoxes() {
    var rng = SplitMix64(seed: 4)
    let side = 32
    // Mask 0: a 10×8 block; mask 1: a soft blob (any value > 0 counts, as `.bool()` does).
    var masks = [Float](repeating: 0, count: 2 * side * side)
    for y in 4..<12 { for x in 5..<15 { masks[y * side + x] = 1 } }
    for y in 20..<26 { for x in 2..<9 { masks[side * side + y * side + x] = 0.3 } }
    let boxes: [[Float]] = [[5, 4, 10, 8], [2, 20, 7, 6]]
    var sawPoints = false
    var sawBoxes = false
    for _ in 0..<40 {
      switch TrainingPrompts.draw(masks: masks, side: side, boxes: boxes, kind: .mixed, using: &rng)
      {
      case .boxes(let t):
        sawBoxes = true
        #expect(t.shape == [2, 4])
        #expect(Array(t.storage.prefix(4)) == [160, 128, 480, 384])  // ×1024/32, XYXY
      case .points(let t):
        sawPoints = true
        let n = t.shape[1]
        #expect((1...10).contains(n) && t.shape[0] == 2)
        for k in 0..<2 {
          var seen = Set<Int>()
          for j in 0..<n {
            let x = Int(t.storage[(k * n + j) * 2] / 32)
            let y = Int(t.storage[(k * n + j) * 2 + 1] / 32)
            #expect(masks[k * side * side + y * side + x] > 0)
            seen.insert(y * side + x)
          }
          #expect(seen.count == n, "distinct pixels")
        }
      }
    }
    #expect(sawPoints && sawBoxes)
    // A one-pixel mask cannot give n > 1 points: boxes instead.
    var tiny = [Float](repeating: 0, count: side * side)
    tiny[100] = 1
    var fellBack = 0
    for _ in 0..<20 {
      if case .boxes = TrainingPrompts.draw(
        masks: tiny, side: side, boxes: [[4, 3, 1, 1]], kind: .points, using: &rng)
      {
        fellBack += 1
      }
    }
    #expect(fellBack > 10)
  }
}
