import EVMask

/// Ultralytics' YOLO segmentation labels: one text file per image, one line per object,
/// `class x1 y1 x2 y2 …` with the polygon's corners divided by the image's width and height.
public enum YOLOSegmentation {
  /// The label file of `image`; `classes` numbers the categories from 0 (every annotation's
  /// category must be among them). A line holds one polygon, so a mask of several regions has
  /// them joined by zero-width cuts, as Ultralytics' own COCO converter joins segments; holes
  /// are joined the same way. Empty masks are left out.
  public static func labels(_ image: AnnotatedImage, classes: [String]) -> String {
    let index = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
    var lines: [String] = []
    for a in image.annotations where a.mask.area > 0 {
      guard let c = index[a.category] else {
        preconditionFailure("YOLOSegmentation: class \(a.category) is not among \(classes)")
      }
      let rings = a.polygons
      let ring = rings.dropFirst().reduce(rings[0]) { MaskContours.join($0, [$1]) }
      let w = Double(image.width)
      let h = Double(image.height)
      let coordinates = ring.map { "\(format(Double($0.x) / w)) \(format(Double($0.y) / h))" }
      lines.append("\(c) " + coordinates.joined(separator: " "))
    }
    return lines.map { $0 + "\n" }.joined()
  }

  /// Six decimals, as Ultralytics writes them; 1e-6 of the image is far below a pixel.
  static func format(_ v: Double) -> String {
    let scaled = (v * 1_000_000).rounded()
    let whole = Int(scaled) / 1_000_000
    let fraction = Int(scaled) % 1_000_000
    let digits = String(fraction)
    return "\(whole)." + String(repeating: "0", count: 6 - digits.count) + digits
  }
}
