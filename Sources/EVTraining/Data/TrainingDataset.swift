import EVEvaluation
import EVImage
import EVMask
import EVTensor
import Foundation

/// The images a run trains and validates on, listed once; each is read (pixels and masks)
/// only when a step or a validation needs it. Two layouts are understood: SA-1B as released
/// (one JSON per image) and COCO instances (one JSON for all images); see `open(folder:)`.
package struct TrainingDataset: Sendable {
  package enum Format: String, Sendable, Codable {
    case sa1b = "SA-1B"
    case coco = "COCO"
  }

  /// One training image and where its annotations are.
  package struct Item: Sendable {
    package enum Annotations: Sendable {
      /// SA-1B: the image's own JSON, read when the image is.
      case sa1b(URL)
      /// COCO: the image's entry and its non-crowd annotations.
      case coco(COCOImage, [COCOAnnotation], file: String)
    }

    package var image: URL
    package var annotations: Annotations

    /// The image's file name: the item's identity in messages and in the data fingerprint.
    package var name: String { image.lastPathComponent }
  }

  package let format: Format
  package let items: [Item]

  package init(format: Format, items: [Item]) {
    self.format = format
    self.items = items
  }

  /// Format, size and a hash of the file names: what must match for a run to resume.
  package var fingerprint: String {
    var hash = FNV1a()
    for item in items { hash.add(item.name + "\n") }
    return "\(format.rawValue), \(items.count) images, names \(hash.hex)"
  }

  /// Reads image `index`: its pixels and every mask with its box.
  package func load(_ index: Int) throws(TrainingDataError) -> LoadedImage {
    let item = items[index]
    let picture: RGBImage
    do {
      // Annotations refer to the stored pixels, not the EXIF display orientation.
      picture = try RGBImage(contentsOf: item.image, applyEXIFOrientation: false)
    } catch {
      throw TrainingDataError(error.description)
    }
    let annotated: (width: Int, height: Int, masks: [(Segmentation, BoxXYWH?, String)])
    let source: String
    switch item.annotations {
    case .sa1b(let json):
      source = json.path
      annotated = try SA1BFile.read(json)
    case .coco(let image, let annotations, let file):
      source = file
      annotated = (
        image.width, image.height,
        annotations.map { ($0.segmentation!, $0.bbox, "annotation \($0.id)") }
      )
    }
    let (h, w) = (picture.height, picture.width)
    guard h == annotated.height, w == annotated.width else {
      throw TrainingDataError(
        "\(item.image.path) is \(w)×\(h) but \(source) says \(annotated.width)×\(annotated.height)"
      )
    }
    guard !annotated.masks.isEmpty else {
      throw TrainingDataError("\(source) has no annotation for \(item.name)")
    }
    var masks: [RLE] = []
    var boxes: [BoxXYWH] = []
    for (segmentation, bbox, what) in annotated.masks {
      let rle: RLE
      do {
        rle = try segmentation.rle(height: h, width: w)
      } catch {
        throw TrainingDataError("\(source), \(what): \(error.description)")
      }
      guard rle.height == h, rle.width == w else {
        throw TrainingDataError(
          "\(source), \(what): the mask is \(rle.width)×\(rle.height) but the image is \(w)×\(h)")
      }
      masks.append(rle)
      boxes.append(bbox ?? rle.boundingBox)
    }
    var planes = [Float](repeating: 0, count: 3 * h * w)
    for p in 0..<(h * w) {
      for c in 0..<3 { planes[c * h * w + p] = Float(picture.pixels[p * 3 + c]) }
    }
    return LoadedImage(planes: planes, height: h, width: w, masks: masks, boxes: boxes)
  }
}

/// One image as read from the dataset: 0…255 float planes and its masks as RLE.
package struct LoadedImage: Sendable {
  /// 3 × height × width, RGB.
  package var planes: [Float]
  package var height: Int
  package var width: Int
  package var masks: [RLE]
  /// XYWH per mask: the annotation's `bbox`, or the mask's bounding box when it has none.
  package var boxes: [BoxXYWH]

  package init(planes: [Float], height: Int, width: Int, masks: [RLE], boxes: [BoxXYWH]) {
    self.planes = planes
    self.height = height
    self.width = width
    self.masks = masks
    self.boxes = boxes
  }
}

/// Training data that cannot be used, in one line naming the file.
package struct TrainingDataError: Error, CustomStringConvertible, Equatable {
  package let description: String
  package init(_ description: String) { self.description = description }
}
