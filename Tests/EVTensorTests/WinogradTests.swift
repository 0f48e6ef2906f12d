import EVTensor
import Testing

/// Winograd F(4×4, 3×3) against the plain reference convolution: image sides that are and are
/// not multiples of 4 (cropped edge tiles), several tile blocks, batches, bias and activations.
@Suite struct WinogradTests {
  struct Case: CustomTestStringConvertible, Sendable {
    var n = 1, c = 16, h = 12, w = 12, o = 16
    var bias = true
    var act = Activation.identity
    var testDescription: String { "N\(n) C\(c) \(h)×\(w) → O\(o) bias \(bias) \(act)" }
  }

  static let cases: [Case] = [
    Case(),
    Case(c: 16, h: 13, w: 7, o: 24, act: .geluTanh),
    Case(n: 2, c: 32, h: 9, w: 10, o: 16, bias: false),
    Case(c: 24, h: 5, w: 5, o: 20, act: .relu),
    // More tiles than one block holds (the block size shrinks as C + O grows).
    Case(c: 256, h: 70, w: 66, o: 256, act: .geluTanh),
  ]

  @Test(arguments: cases)
  func matchesReference(_ t: Case) {
    let x = Tensor.random([t.n, t.c, t.h, t.w], seed: 11, in: -2...2)
    let weight = Tensor.random([t.o, t.c, 3, 3], seed: 12, in: -0.3...0.3)
    let bias = t.bias ? Tensor.random([t.o], seed: 13) : nil
    let fast = conv2dWinograd(
      x, weights: WinogradWeights(weight: weight), bias: bias, activation: t.act)
    let reference = Reference.conv2d(
      x, weight: weight, bias: bias, stride: 1, padding: 1, activation: t.act)
    // The transforms' coefficients (up to 8 and 1/24) amplify float rounding a little beyond a
    // direct sum's: ~3e-6 relative L2 at C = 256, still 30× inside the golden tolerance (1e-4).
    expectClose(fast, reference, tolerance: 1e-5, t.testDescription)
  }

  @Test func appliesOnlyToDenseSameThreeByThree() {
    // Below 64 channels the transforms and their larger arrays cost more than the 4× fewer
    // multiply-adds save (docs/PERFORMANCE.md, item 9): such convs take the im2col path.
    #expect(
      !WinogradWeights.applies(
        kernelSize: 3, stride: 1, padding: 1, groups: 1, inChannels: 32, outChannels: 32))
    #expect(
      WinogradWeights.applies(
        kernelSize: 3, stride: 1, padding: 1, groups: 1, inChannels: 64, outChannels: 64))
    #expect(
      !WinogradWeights.applies(
        kernelSize: 3, stride: 2, padding: 1, groups: 1, inChannels: 64, outChannels: 64))
    #expect(
      !WinogradWeights.applies(
        kernelSize: 3, stride: 1, padding: 1, groups: 64, inChannels: 64, outChannels: 64))
    #expect(
      !WinogradWeights.applies(
        kernelSize: 5, stride: 1, padding: 2, groups: 1, inChannels: 64, outChannels: 64))
    #expect(
      !WinogradWeights.applies(
        kernelSize: 3, stride: 1, padding: 1, groups: 1, inChannels: 3, outChannels: 32))
  }
}
