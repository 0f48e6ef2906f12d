import EVMask
import Foundation

extension UncompressedRLE {
  /// The same runs as a COCO RLE; its `compressedCounts` is what pycocotools'
  /// `frPyObjects(uncompressed_rle, h, w)` encodes (SAM's `coco_encode_rle`).
  public var cocoRLE: RLE {
    // The runs always cover the mask (they are built from one), so this cannot fail.
    try! RLE(height: height, width: width, counts: runs)
  }
}

extension GeneratedMask {
  /// SAM's record for this mask with `segmentation` given by the caller (a binary mask has no
  /// JSON form of its own: the CLI writes it as a PNG and records the file name).
  public func jsonRecord(segmentation: Any) -> [String: Any] {
    [
      "segmentation": segmentation,
      "area": area,
      "bbox": bbox,
      // NaN has no JSON form; SAM's own output would carry it only without a stability filter.
      "predicted_iou": predictedIoU.isNaN ? NSNull() : Double(predictedIoU),
      "stability_score": stabilityScore.isNaN ? NSNull() : Double(stabilityScore),
      "point_coords": [[pointCoords.x, pointCoords.y]],
      "crop_box": cropBox.xywh,
    ]
  }

  /// SAM's record with the segmentation as uncompressed or COCO compressed RLE.
  public func jsonRecord(outputMode: OutputMode) -> [String: Any] {
    switch outputMode {
    case .cocoRLE:
      let rle = segmentation.cocoRLE
      return jsonRecord(segmentation: [
        "size": [rle.height, rle.width], "counts": rle.compressedCounts,
      ])
    case .uncompressedRLE, .binaryMask:
      return jsonRecord(segmentation: segmentation.jsonObject)
    }
  }
}
