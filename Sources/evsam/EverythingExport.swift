import EVExport
import EVImage
import EVMask
import Foundation

/// `evsam everything --format`: the masks as other tools' files.
extension EverythingCommand {
  /// One image's masks as the `--format`'s file at `destination` (a folder for png).
  func writeExport(_ annotated: AnnotatedImage, image: URL, to destination: URL) throws {
    switch exportOptions.format {
    case .sam:
      preconditionFailure("the sam format is the command's own JSON")
    case .coco, .polygons:
      try writeFile(
        ExportFiles.coco([annotated], polygons: exportOptions.format == .polygons), to: destination)
    case .yoloSeg:
      try writeFile(
        Data(YOLOSegmentation.labels(annotated, classes: [exportOptions.category]).utf8),
        to: destination)
    case .labelme:
      let path = ExportFiles.relativePath(of: image, from: destination.deletingLastPathComponent())
      try writeFile(LabelMe.data(annotated, imagePath: path), to: destination)
    case .png:
      try createFolder(destination)
      for (name, data) in try ExportFiles.pngs(annotated) {
        try writeFile(data, to: destination.appendingPathComponent(name))
      }
    }
  }

  /// The export of a folder run, from the per-image JSON files of every image of the folder
  /// that is done (this run's, earlier runs' and other shards'): written at the end of a run.
  func writeFolderExport(_ images: [URL], output: URL) throws {
    let format = exportOptions.format
    guard format != .sam else { return }
    var annotated: [(url: URL, image: AnnotatedImage)] = []
    var notDone = 0
    for image in images {
      let json = output.appendingPathComponent(image.lastPathComponent + ".json")
      guard let stored = completeOutput(json) else {
        notDone += 1
        continue
      }
      annotated.append(
        (
          image,
          try Self.annotatedImage(
            stored, json: json, image: image, category: exportOptions.category)
        ))
    }
    let written: String
    switch format {
    case .sam:
      return
    case .coco, .polygons:
      let file = output.appendingPathComponent("instances.json")
      try writeFile(
        ExportFiles.coco(annotated.map(\.image), polygons: format == .polygons), to: file)
      written = file.path
    case .yoloSeg:
      let folder = output.appendingPathComponent("labels")
      try createFolder(folder)
      for (url, image) in annotated {
        try writeFile(
          Data(YOLOSegmentation.labels(image, classes: [exportOptions.category]).utf8),
          to: folder.appendingPathComponent(ExportFiles.stem(url) + ".txt"))
      }
      try writeFile(
        ExportFiles.classes([exportOptions.category]),
        to: folder.appendingPathComponent("classes.txt"))
      written = folder.path + "/"
    case .labelme:
      let folder = output.appendingPathComponent("labelme")
      try createFolder(folder)
      for (url, image) in annotated {
        try writeFile(
          LabelMe.data(image, imagePath: ExportFiles.relativePath(of: url, from: folder)),
          to: folder.appendingPathComponent(ExportFiles.stem(url) + ".json"))
      }
      written = folder.path + "/"
    case .png:
      for (url, image) in annotated {
        let folder = output.appendingPathComponent(url.lastPathComponent + "_masks")
        try createFolder(folder)
        for (name, data) in try ExportFiles.pngs(image) {
          try writeFile(data, to: folder.appendingPathComponent(name))
        }
      }
      written = output.path + "/<file name>_masks/"
    }
    if !quietOption.quiet {
      let masks = annotated.reduce(0) { $0 + $1.image.annotations.count }
      printErr(
        "\(format.rawValue): \(annotated.count) image(s), \(masks) masks → \(written)"
          + (notDone > 0 ? " (\(notDone) image(s) of the folder not done yet)" : ""))
    }
  }

  /// The masks of a per-image JSON file, whichever --output-mode wrote it.
  static func annotatedImage(
    _ stored: [String: Any], json: URL, image: URL, category: String
  ) throws -> AnnotatedImage {
    func damaged(_ why: String) -> CLIError { CLIError("\(json.path): \(why)") }
    guard let size = stored["size"] as? [Int], size.count == 2, size[0] > 0, size[1] > 0 else {
      throw damaged("no image size")
    }
    let (height, width) = (size[0], size[1])
    let records = stored["annotations"] as? [[String: Any]] ?? []
    let annotations = try records.enumerated().map { i, record in
      let mask: RLE
      switch record["segmentation"] {
      case let rle as [String: Any]:
        if let counts = rle["counts"] as? String {
          mask = try RLE(compressed: counts, height: height, width: width)
        } else if let counts = rle["counts"] as? [Int] {
          mask = try RLE(height: height, width: width, counts: counts.map { UInt32($0) })
        } else {
          throw damaged("annotation \(i): a segmentation without counts")
        }
      case let file as String:
        let png = json.deletingLastPathComponent().appendingPathComponent(file)
        let picture = try RGBImage(contentsOf: png, applyEXIFOrientation: false)
        guard picture.width == width, picture.height == height else {
          throw damaged("annotation \(i): \(file) is not \(width)×\(height)")
        }
        mask = RLE(
          rowMajor: (0..<(width * height)).map { picture.pixels[3 * $0] != 0 }, height: height,
          width: width)
      default:
        throw damaged("annotation \(i) has no segmentation")
      }
      return MaskAnnotation(
        mask: mask, score: record["predicted_iou"] as? Double, category: category)
    }
    return AnnotatedImage(
      fileName: image.lastPathComponent, width: width, height: height, annotations: annotations)
  }
}
