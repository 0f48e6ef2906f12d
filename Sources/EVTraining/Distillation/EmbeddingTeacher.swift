import EVCheckpoint
import EVImage
import EVModel
import EVPredictor
import EVTensor
import Foundation

/// Where a distillation's target embeddings come from: a teacher model run on each image, or
/// a folder of embeddings it wrote earlier (`evsam embed --model sam-vit-h DIR -o CACHE`).
package protocol EmbeddingTeacher: Sendable {
  /// What produced the embeddings: the teacher's weights and preprocessing. Two teachers with
  /// the same identity give the same embeddings.
  var identity: EncoderIdentity { get }
  /// The `1×256×64×64` embedding of the image at `image`.
  func embedding(for image: URL) throws(DistillationError) -> Tensor
}

/// A distillation input or teacher that cannot be used, in one line.
package struct DistillationError: Error, CustomStringConvertible, Equatable {
  package let description: String
  package init(_ description: String) { self.description = description }
}

/// The teacher model itself, run on every image (tens of seconds per image for ViT-H on a
/// CPU: for more than a few steps, cache its embeddings with `evsam embed` first).
package struct ModelTeacher: EmbeddingTeacher {
  package let model: SegmentAnythingModel
  package let identity: EncoderIdentity

  package init(model: SegmentAnythingModel, identity: EncoderIdentity) {
    self.model = model
    self.identity = identity
  }

  package func embedding(for image: URL) throws(DistillationError) -> Tensor {
    model.imageEncoder(model.encoderInput(try readImage(image)))
  }
}

/// A folder of cached teacher embeddings: `teacher.json` (the teacher's identity) and one
/// `<image file name>.safetensors` per image holding `image_embeddings` (1×256×64×64), each
/// also naming its teacher, so a folder never mixes embeddings of different teachers or
/// preprocessing.
package struct EmbeddingFolder: EmbeddingTeacher {
  package static let manifestFile = "teacher.json"
  package static let tensorKey = "image_embeddings"

  package let url: URL
  package let identity: EncoderIdentity

  /// Opens an existing folder, reading its teacher's identity.
  package init(opening url: URL) throws(DistillationError) {
    self.url = url
    let manifest = url.appendingPathComponent(Self.manifestFile)
    guard let data = FileManager.default.contents(atPath: manifest.path) else {
      throw DistillationError(
        "\(url.path) holds no teacher embeddings (no \(Self.manifestFile)); write them with `evsam embed --model sam-vit-h IMAGES -o \(url.path)`"
      )
    }
    do {
      identity = try JSONDecoder().decode(EncoderIdentity.self, from: data)
    } catch {
      throw DistillationError("\(manifest.path) is not a teacher manifest: \(error)")
    }
  }

  /// Opens `url` for writing `identity`'s embeddings: creates it, or checks that the
  /// embeddings already there are that teacher's.
  package init(preparing url: URL, for identity: EncoderIdentity) throws(DistillationError) {
    let manifest = url.appendingPathComponent(Self.manifestFile)
    if FileManager.default.fileExists(atPath: manifest.path) {
      let existing = try EmbeddingFolder(opening: url)
      guard existing.identity.givesTheSameEmbeddings(as: identity) else {
        throw DistillationError(
          "\(url.path) holds embeddings of another teacher or preprocessing: \(existing.identity), not \(identity); give another folder"
        )
      }
    } else {
      do {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try atomicWrite(try encoder.encode(identity), to: manifest)
      } catch let error as DistillationError {
        throw error
      } catch {
        throw DistillationError("cannot create \(manifest.path): \(error.localizedDescription)")
      }
    }
    self.url = url
    self.identity = identity
  }

  /// Where the embedding of the image at `image` is kept: named after the image's file name,
  /// extension included, so `a.jpg` and `a.png` do not collide.
  package func file(for image: URL) -> URL {
    url.appendingPathComponent(image.lastPathComponent + ".safetensors")
  }

  /// Whether a complete embedding of `image` by this teacher is already there.
  package func contains(_ image: URL) -> Bool {
    (try? read(file(for: image))) != nil
  }

  package func embedding(for image: URL) throws(DistillationError) -> Tensor {
    let file = file(for: image)
    guard FileManager.default.fileExists(atPath: file.path) else {
      throw DistillationError(
        "no teacher embedding for \(image.lastPathComponent) in \(url.path); compute the missing ones with `evsam embed` over the images"
      )
    }
    return try read(file)
  }

  private func read(_ file: URL) throws(DistillationError) -> Tensor {
    let loaded: LoadedCheckpoint
    do {
      loaded = try LoadedCheckpoint(contentsOf: file)
    } catch {
      throw DistillationError(error.description)
    }
    guard loaded.metadata["teacher_weights"] == identity.weights,
      loaded.metadata["teacher_preprocessing"] == identity.preprocessing
    else {
      throw DistillationError(
        "\(file.path) was written by another teacher than \(url.path)'s (\(identity.model))")
    }
    guard let tensor = loaded.tensors[Self.tensorKey], tensor.shape == [1, 256, 64, 64] else {
      throw DistillationError("\(file.path) holds no 1×256×64×64 \(Self.tensorKey)")
    }
    return tensor
  }

  /// Stores `embedding` for `image` (whole, under a temporary name renamed into place).
  package func write(_ embedding: Tensor, for image: URL, originalSize: (height: Int, width: Int))
    throws(DistillationError)
  {
    let file = file(for: image)
    do {
      let data = try SafeTensors.encode(
        [Self.tensorKey: embedding],
        metadata: [
          "teacher": identity.model, "teacher_weights": identity.weights,
          "teacher_preprocessing": identity.preprocessing,
          "original_size": "\(originalSize.height),\(originalSize.width)",
        ])
      try atomicWrite(data, to: file)
    } catch let error as CheckpointError {
      throw DistillationError("cannot encode \(file.path): \(error.description)")
    } catch let error as DistillationError {
      throw error
    } catch {
      throw DistillationError("cannot write \(file.path): \(error.localizedDescription)")
    }
  }
}

/// Reads an image as stored (no EXIF rotation: annotations and caches refer to stored pixels).
package func readImage(_ url: URL) throws(DistillationError) -> RGBImage {
  do {
    return try RGBImage(contentsOf: url, applyEXIFOrientation: false)
  } catch {
    throw DistillationError(error.description)
  }
}

/// Writes `data` under a temporary name beside `url`, flushes it to the disk, then renames it
/// into place and flushes the folder: after a crash of the process or of the machine, `url`
/// holds the old bytes or the new ones, never a part.
package func atomicWrite(_ data: Data, to url: URL) throws(DistillationError) {
  let temporary = url.deletingLastPathComponent().appendingPathComponent(
    ".\(url.lastPathComponent).partial-\(ProcessInfo.processInfo.processIdentifier)")
  do {
    guard FileManager.default.createFile(atPath: temporary.path, contents: nil) else {
      throw DistillationError("cannot create \(temporary.path)")
    }
    let handle = try FileHandle(forWritingTo: temporary)
    defer { try? handle.close() }
    try handle.write(contentsOf: data)
    try handle.synchronize()
    if rename(temporary.path, url.path) != 0 {
      throw DistillationError(
        "cannot rename \(temporary.path) to \(url.path): \(String(cString: strerror(errno)))")
    }
    syncFolder(url.deletingLastPathComponent())
  } catch let error as DistillationError {
    try? FileManager.default.removeItem(at: temporary)
    throw error
  } catch {
    try? FileManager.default.removeItem(at: temporary)
    throw DistillationError("cannot write \(url.path): \(error.localizedDescription)")
  }
}

/// Flushes a folder's entries (a rename into it) to the disk; best effort.
package func syncFolder(_ folder: URL) {
  let fd = open(folder.path, O_RDONLY)
  guard fd >= 0 else { return }
  _ = fsync(fd)
  close(fd)
}
