import EVEvaluation
import EVMask
import Foundation

/// One SA-1B annotation file as released (`sa_N.json`): `image` {image_id, width, height,
/// file_name} and `annotations` [{id, segmentation {size, counts}, bbox, area, point_coords,
/// …}]. Only what training uses is read; the rest of each record is ignored.
enum SA1BFile {
  private struct Contents: Decodable {
    struct Image: Decodable {
      var width: Int
      var height: Int
    }

    struct Annotation: Decodable {
      var id: Int?
      var segmentation: Segmentation
      var bbox: [Double]?
    }

    var image: Image
    var annotations: [Annotation]
  }

  /// The image size the file states and its masks (segmentation, XYWH box, a name for
  /// messages).
  static func read(_ url: URL) throws(TrainingDataError) -> (
    width: Int, height: Int, masks: [(Segmentation, BoxXYWH?, String)]
  ) {
    let contents: Contents
    do {
      contents = try JSONDecoder().decode(Contents.self, from: Data(contentsOf: url))
    } catch let error as DecodingError {
      throw TrainingDataError(
        "\(url.path) is not an SA-1B annotation file: \(describe(error))")
    } catch {
      throw TrainingDataError("cannot read \(url.path): \(error.localizedDescription)")
    }
    var masks: [(Segmentation, BoxXYWH?, String)] = []
    for (i, a) in contents.annotations.enumerated() {
      let name = "annotation \(a.id.map(String.init) ?? "#\(i)")"
      var box: BoxXYWH? = nil
      if let b = a.bbox {
        guard b.count == 4, b.allSatisfy(\.isFinite) else {
          throw TrainingDataError("\(url.path), \(name): bbox must be 4 numbers [x, y, w, h]")
        }
        box = BoxXYWH(x: b[0], y: b[1], width: b[2], height: b[3])
      }
      masks.append((a.segmentation, box, name))
    }
    return (contents.image.width, contents.image.height, masks)
  }

  /// Where in the file and what: "annotations[3].segmentation: …".
  static func describe(_ error: DecodingError) -> String {
    func path(_ context: DecodingError.Context) -> String {
      context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        .trimmingCharacters(in: CharacterSet(charactersIn: "."))
    }
    switch error {
    case .keyNotFound(let key, let context):
      let at = path(context)
      return "missing \"\(key.stringValue)\"" + (at.isEmpty ? "" : " in \(at)")
    case .typeMismatch(_, let context), .valueNotFound(_, let context),
      .dataCorrupted(let context):
      let at = path(context)
      return (at.isEmpty ? "" : "\(at): ") + context.debugDescription
    @unknown default:
      return "\(error)"
    }
  }
}
