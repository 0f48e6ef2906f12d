import EVEvaluation
import EVImage
import EVMask
import EVTensor
import EVTraining
import Foundation
import TestSupport
import Testing

/// The dataset readers: SA-1B as released (flat, or images/ + masks/), COCO folders, the
/// errors for bad data, and the official validation masks, split and epoch order.
@Suite struct TrainingDataTests {
  /// The fixtures' COCO set rewritten as SA-1B: one `sa_<id>.jpg` (JPEG, as released) and
  /// `sa_<id>.json` per image with compressed RLE masks, crowds left out.
  static func makeSA1B(images: URL, masks: URL) throws {
    let coco = try COCODataset.load(contentsOf: Fixtures.url("coco/gt.json"))
    for folder in [images, masks] {
      try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }
    for image in coco.images {
      let picture = try RGBImage(contentsOf: Fixtures.url("images/\(image.fileName!)"))
      try picture.jpegData(quality: 95).write(
        to: images.appendingPathComponent("sa_\(image.id).jpg"))
      var annotations: [[String: Any]] = []
      for a in coco.annotations where a.imageID == image.id && !a.isCrowd {
        let rle = try a.segmentation!.rle(height: image.height, width: image.width)
        annotations.append([
          "id": a.id, "area": rle.area, "bbox": rle.boundingBox.array,
          "segmentation": ["size": [image.height, image.width], "counts": rle.compressedCounts],
          "predicted_iou": 0.9, "point_coords": [[10.0, 10.0]], "stability_score": 0.95,
          "crop_box": [0, 0, image.width, image.height],
        ])
      }
      let json: [String: Any] = [
        "image": [
          "image_id": image.id, "width": image.width, "height": image.height,
          "file_name": "sa_\(image.id).jpg",
        ],
        "annotations": annotations,
      ]
      try JSONSerialization.data(withJSONObject: json).write(
        to: masks.appendingPathComponent("sa_\(image.id).json"))
    }
  }

  static func temporaryFolder() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent(
      "evsam-data-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
  }

  @Test func readsSA1BFoldersInBothLayouts() throws {
    let flat = try Self.temporaryFolder()
    let split = try Self.temporaryFolder()
    defer {
      try? FileManager.default.removeItem(at: flat)
      try? FileManager.default.removeItem(at: split)
    }
    try Self.makeSA1B(images: flat, masks: flat)
    try Self.makeSA1B(
      images: split.appendingPathComponent("images"), masks: split.appendingPathComponent("masks"))
    let coco = try COCODataset.load(contentsOf: Fixtures.url("coco/gt.json"))
    for folder in [flat, split] {
      let dataset = try TrainingDataset.open(folder: folder)
      #expect(dataset.format == .sa1b)
      #expect(dataset.items.map(\.name) == ["sa_1.jpg", "sa_2.jpg", "sa_3.jpg"])
      for (index, image) in coco.images.sorted(by: { $0.id < $1.id }).enumerated() {
        let loaded = try dataset.load(index)
        let expected = coco.annotations.filter { $0.imageID == image.id && !$0.isCrowd }
        #expect(loaded.masks.count == expected.count)
        #expect((loaded.height, loaded.width) == (image.height, image.width))
        for (mask, a) in zip(loaded.masks, expected) {
          #expect(mask == (try a.segmentation!.rle(height: image.height, width: image.width)))
        }
        // Planes: the decoded JPEG, channel by channel.
        let picture = try RGBImage(
          contentsOf: dataset.items[index].image, applyEXIFOrientation: false)
        let plane = image.height * image.width
        #expect(loaded.planes[plane + 7] == Float(picture.pixels[7 * 3 + 1]))
      }
    }
    // Both layouts list the same images, so a run can move between them.
    #expect(
      try TrainingDataset.open(folder: flat).fingerprint
        == TrainingDataset.open(folder: split).fingerprint)
  }

  @Test func readsCOCOFoldersAndSkipsCrowds() throws {
    let folder = try Self.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let annotations = folder.appendingPathComponent("annotations")
    try FileManager.default.createDirectory(at: annotations, withIntermediateDirectories: true)
    try FileManager.default.copyItem(
      at: Fixtures.url("coco/gt.json"),
      to: annotations.appendingPathComponent("instances_train2017.json"))
    try FileManager.default.copyItem(
      at: Fixtures.url("images"), to: folder.appendingPathComponent("train2017"))
    let dataset = try TrainingDataset.open(folder: folder)
    #expect(dataset.format == .coco)
    #expect(dataset.items.map(\.name) == ["astronaut.png", "coffee.png", "chelsea.png"])
    // Image 1 has 11 annotations, 2 of them crowds.
    #expect(try dataset.load(0).masks.count == 9)
    let direct = try TrainingDataset.coco(
      annotations: Fixtures.url("coco/gt.json"), images: Fixtures.url("images"))
    #expect(direct.fingerprint == dataset.fingerprint)
  }

  @Test func badDataIsNamed() throws {
    let folder = try Self.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    #expect(throws: TrainingDataError("\(folder.path) is empty")) {
      try TrainingDataset.open(folder: folder)
    }
    try Data("hello".utf8).write(to: folder.appendingPathComponent("notes.txt"))
    let none = #expect(throws: TrainingDataError.self) { try TrainingDataset.open(folder: folder) }
    #expect(none?.description.contains("holds no training data") == true)

    try Self.makeSA1B(images: folder, masks: folder)
    let json = folder.appendingPathComponent("sa_2.json")
    var contents = try #require(
      JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any])
    var image = try #require(contents["image"] as? [String: Any])
    image["width"] = 601
    contents["image"] = image
    try JSONSerialization.data(withJSONObject: contents).write(to: json)
    let dataset = try TrainingDataset.open(folder: folder)
    let size = #expect(throws: TrainingDataError.self) { try dataset.load(1) }
    #expect(size?.description.contains("sa_2.jpg is 600×400 but \(json.path) says 601×400") == true)

    try Data("{\"image\": {\"width\": 3}}".utf8).write(to: json)
    let malformed = #expect(throws: TrainingDataError.self) { try dataset.load(1) }
    #expect(malformed?.description.contains(json.path) == true)
    #expect(malformed?.description.contains("missing \"height\" in image") == true)

    // A mask of another size than its image.
    image["width"] = 600
    contents["image"] = image
    var annotations = try #require(contents["annotations"] as? [[String: Any]])
    annotations[0]["segmentation"] = [
      "size": [10, 10], "counts": RLE.empty(height: 10, width: 10).compressedCounts,
    ]
    contents["annotations"] = annotations
    try JSONSerialization.data(withJSONObject: contents).write(to: json)
    let mask = #expect(throws: TrainingDataError.self) { try dataset.load(1) }
    #expect(mask?.description.contains("the mask is 10×10 but the image is 600×400") == true)
  }

  @Test func validationMasksAreTheOfficialOnes() {
    #expect(validationMasks(count: 1, wanted: 2) == [0, 0])
    #expect(validationMasks(count: 2, wanted: 2) == [0, 1])
    #expect(validationMasks(count: 9, wanted: 2) == [0, 1])
    #expect(validationMasks(count: 2, wanted: 5) == [0, 1, 0, 1, 0])
  }

  @Test func theSplitAndTheEpochOrderDependOnTheSeedAlone() throws {
    let a = try DataSplit(count: 10, validationFraction: 0.2, seed: 7)
    #expect(a == (try DataSplit(count: 10, validationFraction: 0.2, seed: 7)))
    #expect(a.validation.count == 2 && a.train.count == 8)
    #expect(Set(a.train + a.validation) == Set(0..<10))
    #expect(try DataSplit(count: 3, validationFraction: 0.1, seed: 0).validation.count == 1)
    #expect(try DataSplit(count: 3, validationFraction: 0, seed: 0).validation.isEmpty)
    #expect(throws: TrainingDataError.self) {
      try DataSplit(count: 1, validationFraction: 0.5, seed: 0)
    }
    var order = EpochOrder(count: 5, seed: 1)
    let first = (0..<5).map { order.image(at: $0) }
    let second = (5..<10).map { order.image(at: $0) }
    #expect(Set(first) == Set(0..<5) && Set(second) == Set(0..<5))
    #expect(first != second, "a new shuffle every epoch")
    // Found again from the position alone, as a resumed run does.
    var resumed = EpochOrder(count: 5, seed: 1)
    #expect((7..<10).map { resumed.image(at: $0) } == Array(second.suffix(3)))
  }
}
