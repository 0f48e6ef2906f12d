import ArgumentParser
import EVExport
import EVImage
import EVMask
import Foundation

/// The files `segment` and `everything` write their masks as.
enum ExportFormat: String, ExpressibleByArgument, CaseIterable {
  /// The command's own JSON (scores, RLE, boxes, the prompts), with PNGs for `segment`.
  case sam
  /// A COCO instances file with compressed-RLE masks (pycocotools, Detectron2, CVAT…).
  case coco
  /// A COCO instances file with polygon masks, holes joined in (for tools that take polygons).
  case polygons
  /// One PNG per mask.
  case png
  /// Ultralytics YOLO segmentation labels: a text file per image.
  case yoloSeg = "yolo-seg"
  /// A LabelMe JSON file per image.
  case labelme

  static var help: String {
    "sam (the command's JSON), coco (COCO instances, RLE), polygons (COCO instances, polygons), png, yolo-seg or labelme."
  }
}

struct ExportOptions: ParsableArguments {
  @Option(help: ArgumentHelp(ExportFormat.help, valueName: "format"))
  var format: ExportFormat = .sam

  @Option(
    help: ArgumentHelp(
      "The class name the masks get in coco, polygons, yolo-seg and labelme files.",
      valueName: "name"))
  var category = "object"

  func validate() throws {
    guard !category.isEmpty, !category.contains("\n") else {
      throw ValidationError("--category must be a non-empty name on one line")
    }
  }
}

/// The files of the formats, from masks already computed.
enum ExportFiles {
  /// A COCO instances file of `images`, with the categories in order of first appearance.
  static func coco(_ images: [AnnotatedImage], polygons: Bool) throws -> Data {
    try COCOExport.data(
      images, categories: categoryNames(of: images), segmentation: polygons ? .polygons : .rle)
  }

  /// `mask_<i>.png` per mask.
  static func pngs(_ image: AnnotatedImage) throws -> [(name: String, data: Data)] {
    try image.annotations.enumerated().map { i, a in
      let mask = GrayImage(
        mask: a.mask.decodeRowMajorBool(), width: image.width, height: image.height)
      return ("mask_\(i).png", try mask.pngData())
    }
  }

  /// The file name of an image's YOLO or LabelMe file: its name without the extension.
  static func stem(_ image: URL) -> String { image.deletingPathExtension().lastPathComponent }

  /// The path of `file` relative to `folder` (both made absolute), as LabelMe's `imagePath`.
  static func relativePath(of file: URL, from folder: URL) -> String {
    let target = file.standardizedFileURL.pathComponents
    let base = folder.standardizedFileURL.pathComponents
    var common = 0
    while common < min(target.count, base.count) && target[common] == base[common] {
      common += 1
    }
    let up = Array(repeating: "..", count: base.count - common)
    return (up + target[common...]).joined(separator: "/")
  }

  /// `classes.txt` of YOLO labels: one class name per line, class 0 first.
  static func classes(_ names: [String]) -> Data { Data(names.map { $0 + "\n" }.joined().utf8) }
}
