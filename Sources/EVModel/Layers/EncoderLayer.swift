import EVTensor

/// Height and width of a feature map.
public struct FeatureSize: Sendable, Equatable, CustomStringConvertible {
  public var height: Int
  public var width: Int

  public init(height: Int, width: Int) {
    self.height = height
    self.width = width
  }

  public init(square side: Int) { self.init(height: side, width: side) }

  public var pixels: Int { height * width }
  public var description: String { "\(height)×\(width)" }
}

/// A layer of the image encoder: NCHW in, NCHW out.
public protocol EncoderLayer: Sendable {
  func callAsFunction(_ x: Tensor) -> Tensor

  /// Multiply-accumulates of one forward pass (batch 1) on an input of `input` size, and the
  /// size of the output. Convolutions and matrix products count; elementwise work
  /// (activations, residual adds, normalisation, the attention's division) does not.
  func multiplyAccumulates(input: FeatureSize) -> (macs: Int, output: FeatureSize)
}

/// Runs layers one after the other, like efficientvit's `OpSequential`.
func runSequence(_ layers: [any EncoderLayer], _ x: Tensor) -> Tensor {
  var y = x
  for layer in layers { y = layer(y) }
  return y
}

func sequenceMultiplyAccumulates(_ layers: [any EncoderLayer], input: FeatureSize) -> (
  macs: Int, output: FeatureSize
) {
  var total = 0
  var size = input
  for layer in layers {
    let (m, out) = layer.multiplyAccumulates(input: size)
    total += m
    size = out
  }
  return (total, size)
}
