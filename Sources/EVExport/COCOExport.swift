import EVMask
import Foundation

/// A COCO instances file (`images`, `annotations`, `categories`), as pycocotools' `COCO` loads
/// it and as CVAT, Label Studio, Roboflow and Detectron2 import it.
public enum COCOExport {
  /// How each annotation's mask is stored.
  public enum Segmentation: Sendable {
    /// pycocotools' compressed RLE: exact.
    case rle
    /// Polygons through pixel corners, one per region, holes joined in by zero-width cuts:
    /// exact under pycocotools' rasteriser, and readable by tools that take polygons only.
    case polygons
  }

  /// The file's JSON object. Images get ids 1, 2, … in order, annotations 1, 2, … across
  /// images, categories 1, 2, … in the order of `categories` (every annotation's category must
  /// be among them). Empty masks are left out: COCO has no form for them.
  public static func document(
    _ images: [AnnotatedImage], categories: [String], segmentation: Segmentation,
    description: String = "EfficientViT-SAM masks"
  ) -> [String: Any] {
    let categoryID = Dictionary(
      uniqueKeysWithValues: categories.enumerated().map { ($1, $0 + 1) })
    var annotations: [[String: Any]] = []
    for (i, image) in images.enumerated() {
      for a in image.annotations where a.mask.area > 0 {
        guard let category = categoryID[a.category] else {
          preconditionFailure("COCOExport: category \(a.category) is not among \(categories)")
        }
        var record: [String: Any] = [
          "id": annotations.count + 1, "image_id": i + 1, "category_id": category,
          "area": a.mask.area, "bbox": a.mask.boundingBox.array, "iscrowd": 0,
        ]
        switch segmentation {
        case .rle:
          record["segmentation"] = [
            "size": [a.mask.height, a.mask.width], "counts": a.mask.compressedCounts,
          ]
        case .polygons:
          record["segmentation"] = a.polygons.map { ring in ring.flatMap { [$0.x, $0.y] } }
        }
        if let score = a.score { record["score"] = score }
        annotations.append(record)
      }
    }
    return [
      "info": ["description": description],
      "licenses": [[String: Any]](),
      "images": images.enumerated().map { i, image in
        ["id": i + 1, "file_name": image.fileName, "width": image.width, "height": image.height]
      },
      "annotations": annotations,
      "categories": categories.enumerated().map { i, name in
        ["id": i + 1, "name": name, "supercategory": name]
      },
    ]
  }

  /// `document` as JSON.
  public static func data(
    _ images: [AnnotatedImage], categories: [String], segmentation: Segmentation
  ) throws -> Data {
    try JSONSerialization.data(
      withJSONObject: document(images, categories: categories, segmentation: segmentation),
      options: [.sortedKeys, .withoutEscapingSlashes])
  }
}
