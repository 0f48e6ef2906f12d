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

  /// A run of tiles of one plane: its size, and which tiles (a run may start mid-row and span
  /// several tile rows, as the tile blocks of `conv2dWinograd` do).
  struct Run: CustomTestStringConvertible, Sendable {
    var h: Int, w: Int, first = 0, count: Int? = nil
    var tilesW: Int { (w + 3) / 4 }
    var tiles: Int { count ?? ((h + 3) / 4) * tilesW - first }
    var testDescription: String { "\(h)×\(w) tiles \(first)..<\(first + tiles)" }
  }

  static let runs: [Run] = [
    Run(h: 1, w: 1), Run(h: 13, w: 7), Run(h: 64, w: 64), Run(h: 30, w: 150, first: 17, count: 100),
    Run(h: 9, w: 70, first: 5, count: 45), Run(h: 40, w: 257, first: 63, count: 301),
  ]

  /// The vector transforms against the Swift loops at every level this CPU has, bit for bit,
  /// including what they must leave alone (gaps between the matrices, pixels outside the run).
  @Test(arguments: runs)
  func transformsMatchThePortableLoopsBitForBit(_ r: Run) {
    let sentinel = Float(bitPattern: 0x7FC0_1234)
    let plane = Tensor.random([r.h * r.w], seed: 21, in: -2...2).storage
    let stride = r.tiles + 3
    func input() -> [UInt32] {
      var v = [Float](repeating: sentinel, count: 36 * stride)
      plane.withUnsafeBufferPointer { p in
        v.withUnsafeMutableBufferPointer { pv in
          WinogradTransform.input(
            p.baseAddress!, height: r.h, width: r.w, tilesW: r.tilesW, firstTile: r.first,
            count: r.tiles, into: pv.baseAddress!, matrixStride: stride)
        }
      }
      return v.map(\.bitPattern)
    }
    let m = Tensor.random([36 * stride], seed: 22, in: -3...3).storage
    func output(_ act: Activation, bias: Float) -> [UInt32] {
      var out = [Float](repeating: sentinel, count: r.h * r.w)
      m.withUnsafeBufferPointer { pm in
        out.withUnsafeMutableBufferPointer { po in
          WinogradTransform.output(
            pm.baseAddress!, matrixStride: stride, count: r.tiles, firstTile: r.first,
            tilesW: r.tilesW, bias: bias, act, into: po.baseAddress!, height: r.h, width: r.w)
        }
      }
      return out.map(\.bitPattern)
    }
    let epilogues: [(Activation, Float)] = [
      (.identity, 0), (.identity, 0.25), (.relu, -0.5), (.geluTanh, 0.1), (.hardswish, 0.3),
    ]
    let portableInput = SIMDLevel.capped(at: .portable) { input() }
    let portableOutputs = SIMDLevel.capped(at: .portable) {
      epilogues.map { output($0.0, bias: $0.1) }
    }
    #expect(portableOutputs[0].contains { $0 != sentinel.bitPattern })
    for level in SIMDLevel.supported {
      #expect(SIMDLevel.capped(at: level) { input() } == portableInput, "input at \(level)")
      for (e, expected) in zip(epilogues, portableOutputs) {
        let got = SIMDLevel.capped(at: level) { output(e.0, bias: e.1) }
        #expect(got == expected, "output \(e.0) bias \(e.1) at \(level)")
      }
    }
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
