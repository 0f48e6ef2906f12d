import EVMask

/// One image's masks, in the form every export format starts from.
public struct AnnotatedImage: Sendable {
  /// The image as the formats record it: COCO's `file_name`, the stem of YOLO's label file,
  /// LabelMe's `imagePath`.
  public var fileName: String
  public var width: Int
  public var height: Int
  public var annotations: [MaskAnnotation]

  public init(fileName: String, width: Int, height: Int, annotations: [MaskAnnotation]) {
    self.fileName = fileName
    self.width = width
    self.height = height
    self.annotations = annotations
  }
}

/// One object: its mask, the model's score for it (if any) and its class.
public struct MaskAnnotation: Sendable {
  public var mask: RLE
  public var score: Double?
  public var category: String

  public init(mask: RLE, score: Double? = nil, category: String) {
    self.mask = mask
    self.score = score
    self.category = category
  }

  /// The mask's regions as polygons, each with its holes joined in (see `MaskRegion.joined`).
  public var polygons: [[GridPoint]] {
    MaskContours.regions(rowMajor: mask.decodeRowMajor(), width: mask.width, height: mask.height)
      .map(\.joined)
  }
}

/// The category names of `images` in order of first appearance (the order formats number them
/// in), after any names given first.
public func categoryNames(of images: [AnnotatedImage], startingWith given: [String] = [])
  -> [String]
{
  var names = given
  var seen = Set(given)
  for image in images {
    for a in image.annotations where seen.insert(a.category).inserted { names.append(a.category) }
  }
  return names
}
