/// A point in image pixels, x to the right and y down (or in [0, 1]² for a normalised point
/// grid): a click, a point of the generator's grid, a marker on an overlay.
public struct Point: Sendable, Hashable, Codable {
  public var x: Double
  public var y: Double

  public init(x: Double, y: Double) {
    self.x = x
    self.y = y
  }
}

/// A box by its corners in image pixels, (x0, y0) top left and (x1, y1) bottom right: a box
/// prompt and its marker on an overlay. (The generator's integer pixel boxes and COCO's
/// x, y, width, height keep their own types: their conventions are part of the formats that
/// must be matched bit for bit.)
public struct Box: Sendable, Hashable, Codable {
  public var x0: Double
  public var y0: Double
  public var x1: Double
  public var y1: Double

  public init(x0: Double, y0: Double, x1: Double, y1: Double) {
    self.x0 = x0
    self.y0 = y0
    self.x1 = x1
    self.y1 = y1
  }

  /// `[x0, y0, x1, y1]`, as SAM's API takes a box.
  public var values: [Double] { [x0, y0, x1, y1] }
}
