import EVImage

/// An integer pixel box in XYXY form, as SAM's generator keeps mask boxes and crop boxes (a
/// prompt box is a `Box`; these follow SAM's integer conventions, below, which its JSON keeps).
///
/// For a mask box (`AMG.maskToBox`) `x1`/`y1` are the last column/row *inside* the mask, so
/// the XYWH form SAM writes has `w = x1 - x0` (one less than the pixel extent); for a crop box
/// they are exclusive ends. Both are SAM's conventions.
public struct BoxXYXY: Sendable, Equatable, Hashable, Codable {
  public var x0: Int
  public var y0: Int
  public var x1: Int
  public var y1: Int

  public init(x0: Int, y0: Int, x1: Int, y1: Int) {
    self.x0 = x0
    self.y0 = y0
    self.x1 = x1
    self.y1 = y1
  }

  public static let zero = BoxXYXY(x0: 0, y0: 0, x1: 0, y1: 0)

  /// `[x0, y0, x1 - x0, y1 - y0]`, SAM's `box_xyxy_to_xywh`.
  public var xywh: [Int] { [x0, y0, x1 - x0, y1 - y0] }

  /// `(x1 - x0) * (y1 - y0)`, torchvision's `box_area`.
  public var area: Int { (x1 - x0) * (y1 - y0) }

  /// Moved from a crop's frame into the image's: `uncrop_boxes_xyxy`.
  public func uncropped(from crop: BoxXYXY) -> BoxXYXY {
    BoxXYXY(x0: x0 + crop.x0, y0: y0 + crop.y0, x1: x1 + crop.x0, y1: y1 + crop.y0)
  }

  /// The corners as float32, the form torchvision's NMS works on.
  public var floats: SIMD4<Float> { SIMD4(Float(x0), Float(y0), Float(x1), Float(y1)) }
}
