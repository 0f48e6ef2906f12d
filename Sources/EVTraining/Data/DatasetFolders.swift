import EVEvaluation
import EVImage
import Foundation

extension TrainingDataset {
  static let imageExtensions = ImageFormat.fileExtensions

  /// The dataset in `folder`, its layout recognised in this order:
  /// 1. SA-1B as released: `sa_N.jpg` with `sa_N.json` beside it (any image with a JSON of
  ///    the same name);
  /// 2. SA-1B split in two folders: `images/` and `masks/` (or `annotations/`), paired by name;
  /// 3. COCO instances: `annotations/*.json` (the one file there, or the one named
  ///    `instances*`), its images in `images/`, in a folder named after the split
  ///    (`instances_train2017.json` → `train2017/`) or in `folder` itself.
  package static func open(folder: URL) throws(TrainingDataError) -> TrainingDataset {
    let names = try listing(folder)
    guard !names.isEmpty else { throw TrainingDataError("\(folder.path) is empty") }
    let flat = sa1bPairs(images: folder, names, annotations: folder, names)
    if !flat.isEmpty { return TrainingDataset(format: .sa1b, items: flat) }
    let imagesFolder = folder.appendingPathComponent("images")
    for sub in ["masks", "annotations"] where isFolder(folder.appendingPathComponent(sub)) {
      guard isFolder(imagesFolder) else { continue }
      let jsonFolder = folder.appendingPathComponent(sub)
      let pairs = try sa1bPairs(
        images: imagesFolder, listing(imagesFolder), annotations: jsonFolder, listing(jsonFolder))
      if !pairs.isEmpty { return TrainingDataset(format: .sa1b, items: pairs) }
    }
    let annotationsFolder = folder.appendingPathComponent("annotations")
    if isFolder(annotationsFolder) {
      let jsons = try listing(annotationsFolder).filter { $0.lowercased().hasSuffix(".json") }
      if !jsons.isEmpty {
        let file = try chooseCOCOFile(jsons, in: annotationsFolder)
        let split = file.deletingPathExtension().lastPathComponent
          .replacingOccurrences(of: "instances_", with: "")
        let candidates = [imagesFolder, folder.appendingPathComponent(split), folder]
        return try coco(annotations: file, imageFolders: candidates)
      }
    }
    throw TrainingDataError(
      "\(folder.path) holds no training data: expected SA-1B (sa_N.jpg beside sa_N.json, or "
        + "images/ with masks/ or annotations/) or COCO (annotations/*.json with its images in "
        + "images/, a folder named after the split, or the folder itself)")
  }

  /// A COCO instances file and the folder its `file_name`s are in. Crowd annotations and
  /// images without any other annotation are left out.
  package static func coco(annotations file: URL, images folder: URL) throws(TrainingDataError)
    -> TrainingDataset
  {
    try coco(annotations: file, imageFolders: [folder])
  }

  /// The first of `imageFolders` that holds the first image is taken; every image must be
  /// there.
  private static func coco(annotations file: URL, imageFolders: [URL]) throws(TrainingDataError)
    -> TrainingDataset
  {
    let dataset: COCODataset
    do {
      dataset = try COCODataset.load(contentsOf: file)
    } catch {
      throw TrainingDataError(error.description)
    }
    let byImage = Dictionary(grouping: dataset.annotations.filter { !$0.isCrowd }) {
      $0.imageID
    }
    var usable: [(COCOImage, [COCOAnnotation])] = []
    for image in dataset.images.sorted(by: { $0.id < $1.id }) {
      guard let annotations = byImage[image.id] else { continue }
      guard image.fileName != nil else {
        throw TrainingDataError("\(file.path): image \(image.id) has no file_name")
      }
      if let bare = annotations.first(where: { $0.segmentation == nil }) {
        throw TrainingDataError("\(file.path): annotation \(bare.id) has no segmentation")
      }
      usable.append((image, annotations))
    }
    guard let first = usable.first?.0.fileName else {
      throw TrainingDataError("\(file.path): no image has a non-crowd annotation to train on")
    }
    let fm = FileManager.default
    guard
      let folder = imageFolders.first(where: {
        fm.fileExists(atPath: $0.appendingPathComponent(first).path)
      })
    else {
      throw TrainingDataError(
        "\(file.path) names \(first), which is in none of "
          + imageFolders.map(\.path).joined(separator: ", "))
    }
    var items: [Item] = []
    for (image, annotations) in usable {
      let url = folder.appendingPathComponent(image.fileName!)
      guard fm.fileExists(atPath: url.path) else {
        throw TrainingDataError("\(url.path), named by \(file.path), does not exist")
      }
      items.append(Item(image: url, annotations: .coco(image, annotations, file: file.path)))
    }
    return TrainingDataset(format: .coco, items: items)
  }

  private static func chooseCOCOFile(_ jsons: [String], in folder: URL) throws(TrainingDataError)
    -> URL
  {
    if jsons.count == 1 { return folder.appendingPathComponent(jsons[0]) }
    let instances = jsons.filter { $0.lowercased().hasPrefix("instances") }
    if instances.count == 1 { return folder.appendingPathComponent(instances[0]) }
    throw TrainingDataError(
      "\(folder.path) holds several annotation files (\(jsons.sorted().joined(separator: ", "))); "
        + "name one with --annotations FILE --images DIR")
  }

  /// Images and JSON files of the same name, in natural order of the names (sa_2 before
  /// sa_10).
  private static func sa1bPairs(
    images: URL, _ imageNames: [String], annotations: URL, _ jsonNames: [String]
  ) -> [Item] {
    var jsonByStem: [String: String] = [:]
    for name in jsonNames where name.lowercased().hasSuffix(".json") {
      jsonByStem[String(name.dropLast(5))] = name
    }
    var items: [Item] = []
    for name in imageNames {
      let url = images.appendingPathComponent(name)
      guard imageExtensions.contains(url.pathExtension.lowercased()) else { continue }
      guard let json = jsonByStem[url.deletingPathExtension().lastPathComponent] else { continue }
      items.append(Item(image: url, annotations: .sa1b(annotations.appendingPathComponent(json))))
    }
    return items.sorted { $0.name.compare($1.name, options: .numeric) == .orderedAscending }
  }

  /// The visible entries of a folder.
  private static func listing(_ folder: URL) throws(TrainingDataError) -> [String] {
    guard FileManager.default.fileExists(atPath: folder.path) else {
      throw TrainingDataError("\(folder.path) does not exist")
    }
    guard isFolder(folder) else {
      throw TrainingDataError("\(folder.path) is not a folder")
    }
    do {
      return try FileManager.default.contentsOfDirectory(atPath: folder.path)
        .filter { !$0.hasPrefix(".") }
    } catch {
      throw TrainingDataError("cannot read \(folder.path): \(error.localizedDescription)")
    }
  }

  private static func isFolder(_ url: URL) -> Bool {
    var isDirectory: ObjCBool = false
    return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory)
      && isDirectory.boolValue
  }
}
