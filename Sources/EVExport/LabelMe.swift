import EVMask
import Foundation

/// A LabelMe annotation file (labelme ≥ 5): one per image, beside it or pointing at it with
/// `imagePath`.
public enum LabelMe {
  /// The JSON object for `image`, whose file `imagePath` names relative to the JSON file. Each
  /// region of a mask is a `polygon` shape (holes joined in by zero-width cuts); the regions of
  /// one mask share a `group_id` (the mask's number, from 1), and the score, when there is one,
  /// is in the shape's `description`. Empty masks are left out.
  public static func document(_ image: AnnotatedImage, imagePath: String) -> [String: Any] {
    var shapes: [[String: Any]] = []
    for (i, a) in image.annotations.enumerated() where a.mask.area > 0 {
      for ring in a.polygons {
        shapes.append([
          "label": a.category,
          "points": ring.map { [Double($0.x), Double($0.y)] },
          "group_id": i + 1,
          "description": a.score.map { String(format: "score %.4f", $0) } ?? "",
          "shape_type": "polygon",
          "flags": [String: Any](),
          "mask": NSNull(),
        ])
      }
    }
    return [
      "version": "5.5.0", "flags": [String: Any](), "shapes": shapes, "imagePath": imagePath,
      "imageData": NSNull(), "imageHeight": image.height, "imageWidth": image.width,
    ]
  }

  /// `document` as JSON.
  public static func data(_ image: AnnotatedImage, imagePath: String) throws -> Data {
    try JSONSerialization.data(
      withJSONObject: document(image, imagePath: imagePath),
      options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
  }
}
