import EVExport
import EVMask
import Foundation
import TestSupport
import Testing

/// Each format written, then read back by its own ecosystem's reader (pycocotools for COCO) or
/// by a parser written here from the format's specification, and compared with the masks.
@Suite struct ExportFormatTests {
  /// Three images of blob masks (holes, islands, corner-touching pixels) in two categories,
  /// with scores, and one empty mask that every format leaves out.
  static let images: [AnnotatedImage] = (0..<3).map(image)

  static func image(_ i: Int) -> AnnotatedImage {
    let width = 40 + 13 * i
    let height = 31 + 7 * i
    var annotations: [MaskAnnotation] = []
    for k in 0..<(2 + i) {
      let mask = MaskShapes.blobs(seed: UInt64(10 * i + k), width: width, height: height)
      annotations.append(
        MaskAnnotation(
          mask: RLE(rowMajor: mask, height: height, width: width),
          score: 0.5 + Double(k) / 10, category: k % 2 == 0 ? "object" : "part"))
    }
    annotations.insert(
      MaskAnnotation(mask: .empty(height: height, width: width), category: "object"), at: 1)
    return AnnotatedImage(
      fileName: "image \(i).png", width: width, height: height, annotations: annotations)
  }

  static var nonEmpty: [[MaskAnnotation]] {
    images.map { $0.annotations.filter { $0.mask.area > 0 } }
  }

  @Test func yoloSegLabelsReadBackAsTheMasks() throws {
    let classes = categoryNames(of: Self.images)
    #expect(classes == ["object", "part"])
    for (image, expected) in zip(Self.images, Self.nonEmpty) {
      let text = YOLOSegmentation.labels(image, classes: classes)
      // Ultralytics' format: per line an integer class, then ≥ 3 points x y, each in [0, 1].
      let lines = text.split(separator: "\n")
      #expect(text.hasSuffix("\n") && lines.count == expected.count)
      for (line, annotation) in zip(lines, expected) {
        let fields = line.split(separator: " ")
        let values = try fields.dropFirst().map { field in
          try #require(Double(field), "\(field) is not a number")
        }
        #expect(Int(fields[0]) == classes.firstIndex(of: annotation.category))
        #expect(values.count % 2 == 0 && values.count >= 6)
        #expect(values.allSatisfy { (0...1).contains($0) })
        let polygon = stride(from: 0, to: values.count, by: 2).map {
          (x: values[$0] * Double(image.width), y: values[$0 + 1] * Double(image.height))
        }
        let filled = MaskShapes.fill([polygon], width: image.width, height: image.height)
        let iou = MaskShapes.iou(filled, annotation.mask.decodeRowMajor())
        #expect(iou >= 0.98, "\(image.fileName): IoU \(iou)")
      }
    }
  }

  @Test func labelMeShapesReadBackAsTheMasks() throws {
    for (image, expected) in zip(Self.images, Self.nonEmpty) {
      let data = try LabelMe.data(image, imagePath: "../images/" + image.fileName)
      // labelme's format: imagePath, imageWidth/Height, shapes of {label, points [[x, y]],
      // group_id, shape_type}; one object's polygons share a group_id.
      let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
      #expect(json["imagePath"] as? String == "../images/" + image.fileName)
      #expect(json["imageWidth"] as? Int == image.width)
      #expect(json["imageHeight"] as? Int == image.height)
      let shapes = try #require(json["shapes"] as? [[String: Any]])
      var groups: [Int: (label: String, polygons: [[(x: Double, y: Double)]])] = [:]
      for shape in shapes {
        #expect(shape["shape_type"] as? String == "polygon")
        let points = try #require(shape["points"] as? [[Double]])
        #expect(points.count >= 3 && points.allSatisfy { $0.count == 2 })
        let group = try #require(shape["group_id"] as? Int)
        let label = try #require(shape["label"] as? String)
        groups[group, default: (label, [])].polygons.append(points.map { ($0[0], $0[1]) })
      }
      #expect(groups.count == expected.count)
      for (group, annotation) in zip(groups.keys.sorted(), expected) {
        let entry = groups[group]!
        #expect(entry.label == annotation.category)
        var union = [UInt8](repeating: 0, count: image.width * image.height)
        for polygon in entry.polygons {
          let filled = MaskShapes.fill([polygon], width: image.width, height: image.height)
          for i in union.indices { union[i] |= filled[i] }
        }
        let iou = MaskShapes.iou(union, annotation.mask.decodeRowMajor())
        #expect(iou >= 0.98, "\(image.fileName) group \(group): IoU \(iou)")
      }
    }
  }

  /// Both COCO forms loaded by pycocotools' `COCO`, every annotation decoded by `annToMask`:
  /// both give the masks exactly.
  @Test func cocoFilesLoadInPycocotools() throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "evsam-coco-\(ProcessInfo.processInfo.processIdentifier)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let categories = categoryNames(of: Self.images)
    let rleFile = folder.appendingPathComponent("rle.json")
    let polygonFile = folder.appendingPathComponent("polygons.json")
    try COCOExport.data(Self.images, categories: categories, segmentation: .rle).write(to: rleFile)
    try COCOExport.data(Self.images, categories: categories, segmentation: .polygons)
      .write(to: polygonFile)
    let script = """
      import contextlib, json, sys
      from pycocotools.coco import COCO
      from pycocotools import mask as M
      out = []
      with contextlib.redirect_stdout(sys.stderr):  # COCO() reports its loading on stdout
          files = [COCO(path) for path in sys.argv[1:3]]
      with open(sys.argv[3], "wb") as masks:
          for coco in files:
              for ann in coco.loadAnns(sorted(coco.getAnnIds())):
                  image = coco.loadImgs(ann["image_id"])[0]
                  m = coco.annToMask(ann)
                  masks.write(m.astype("uint8").tobytes())
                  out.append({"file": image["file_name"], "size": list(m.shape),
                              "category": coco.loadCats(ann["category_id"])[0]["name"],
                              "score": ann["score"], "area": ann["area"], "bbox": ann["bbox"],
                              "rle_bbox": list(M.toBbox(coco.annToRLE(ann)))})
      print(json.dumps(out))
      """
    let masksFile = folder.appendingPathComponent("masks.bin")
    let output = try PythonTools.run(
      script, arguments: [rleFile.path, polygonFile.path, masksFile.path])
    let records = try #require(try JSONSerialization.jsonObject(with: output) as? [[String: Any]])
    let decoded = [UInt8](try Data(contentsOf: masksFile))
    let expected = zip(Self.images, Self.nonEmpty).flatMap { image, masks in
      masks.map { (image, $0) }
    }
    #expect(records.count == 2 * expected.count)
    var offset = 0
    for (n, record) in records.enumerated() {
      let (image, annotation) = expected[n % expected.count]
      let label = "\(n < expected.count ? "RLE" : "polygons") #\(n % expected.count)"
      #expect(record["file"] as? String == image.fileName, "\(label)")
      #expect(record["size"] as? [Int] == [image.height, image.width], "\(label)")
      #expect(record["category"] as? String == annotation.category, "\(label)")
      #expect(record["score"] as? Double == annotation.score, "\(label)")
      #expect(record["area"] as? Int == annotation.mask.area, "\(label)")
      #expect(record["bbox"] as? [Double] == annotation.mask.boundingBox.array, "\(label)")
      let count = image.width * image.height
      let mask = Array(decoded[offset..<(offset + count)])
      offset += count
      let truth = annotation.mask.decodeRowMajor()
      // Polygons through pixel corners, holes joined by cuts, are exact under pycocotools too.
      #expect(mask == truth, "\(label): pycocotools decodes other pixels")
      #expect(record["rle_bbox"] as? [Double] == annotation.mask.boundingBox.array, "\(label)")
    }
    #expect(offset == decoded.count)
  }
}
