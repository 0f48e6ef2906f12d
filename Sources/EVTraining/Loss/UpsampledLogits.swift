/// Low-res mask logits seen through PyTorch's `F.interpolate(mode="bilinear",
/// align_corners=False)` to `side × side`, without materialising the upsampled map: the loss
/// reads about 12 544 points of it per mask, so each read computes its pixel from the four
/// low-res taps, exactly as the interpolation would have stored it (float32 source coordinate
/// `max(scale·(dst + 0.5) − 0.5, 0)`, float32 weights). The backward pass scatters into the
/// same four taps.
package struct UpsampledLogits {
  /// One output row's or column's taps: the two source indices and the second one's weight.
  struct Taps {
    let low: [Int32]
    let high: [Int32]
    let weight: [Float]

    init(input: Int, output: Int) {
      let scale = Float(input) / Float(output)
      var low = [Int32](repeating: 0, count: output)
      var high = [Int32](repeating: 0, count: output)
      var weight = [Float](repeating: 0, count: output)
      for dst in 0..<output {
        let real = max(scale * (Float(dst) + 0.5) - 0.5, 0)
        let i0 = min(Int(real), input - 1)
        low[dst] = Int32(i0)
        high[dst] = Int32(min(i0 + 1, input - 1))
        weight[dst] = real - Float(i0)
      }
      self.low = low
      self.high = high
      self.weight = weight
    }
  }

  let inputHeight: Int
  let inputWidth: Int
  let side: Int
  let rows: Taps
  let columns: Taps

  package init(inputHeight: Int, inputWidth: Int, side: Int) {
    self.inputHeight = inputHeight
    self.inputWidth = inputWidth
    self.side = side
    rows = Taps(input: inputHeight, output: side)
    columns = Taps(input: inputWidth, output: side)
  }

  /// Pixel (y, x) of the upsampled map of `plane` (one low-res mask, row-major), as PyTorch's
  /// kernel forms it: `(1−λh)·((1−λw)·a + λw·b) + λh·((1−λw)·c + λw·d)` in float32.
  @inline(__always)
  package func value(_ plane: UnsafePointer<Float>, y: Int, x: Int) -> Float {
    let (y0, y1, h1) = (Int(rows.low[y]), Int(rows.high[y]), rows.weight[y])
    let (x0, x1, w1) = (Int(columns.low[x]), Int(columns.high[x]), columns.weight[x])
    let h0 = 1 - h1
    let w0 = 1 - w1
    let top = w0 * plane[y0 * inputWidth + x0] + w1 * plane[y0 * inputWidth + x1]
    let bottom = w0 * plane[y1 * inputWidth + x0] + w1 * plane[y1 * inputWidth + x1]
    return h0 * top + h1 * bottom
  }

  /// Adds `g · ∂pixel(y, x)/∂plane` into `gradient` (one low-res plane; a handful of points
  /// reach each of its pixels, so float sums lose nothing that matters).
  @inline(__always)
  func accumulate(_ g: Double, into gradient: UnsafeMutablePointer<Float>, y: Int, x: Int) {
    let (y0, y1, h1) = (Int(rows.low[y]), Int(rows.high[y]), Double(rows.weight[y]))
    let (x0, x1, w1) = (Int(columns.low[x]), Int(columns.high[x]), Double(columns.weight[x]))
    let h0 = 1 - h1
    let w0 = 1 - w1
    gradient[y0 * inputWidth + x0] += Float(g * h0 * w0)
    gradient[y0 * inputWidth + x1] += Float(g * h0 * w1)
    gradient[y1 * inputWidth + x0] += Float(g * h1 * w0)
    gradient[y1 * inputWidth + x1] += Float(g * h1 * w1)
  }
}
