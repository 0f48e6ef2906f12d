import EVCheckpoint
import EVTensor
import Foundation
import TestSupport
import Testing

/// The official files: `torch.save` archives and safetensors written by the Python side.
@Suite struct FixtureCheckpointTests {
  /// Key → (shape, dtype) from a manifest, for the keys that pass `filter`.
  static func manifest(_ name: String, where filter: (String) -> Bool) throws -> [String: (
    String, String
  )] {
    let text = try String(
      contentsOf: try Fixtures.url("manifests/\(name).tsv"), encoding: .utf8)
    var out: [String: (String, String)] = [:]
    for line in text.split(separator: "\n").dropFirst() {
      let fields = line.split(separator: "\t").map(String.init)
      if fields.count == 3, filter(fields[0]) { out[fields[0]] = (fields[1], fields[2]) }
    }
    return out
  }

  @Test func tinyLArchiveEqualsSafetensorsBitwise() throws {
    let pt = try LoadedCheckpoint(contentsOf: try Fixtures.url("models/tiny-l.pt"))
    let st = try LoadedCheckpoint(contentsOf: try Fixtures.url("models/tiny-l.safetensors"))
    #expect(pt.format == .pytorch)
    #expect(st.format == .safetensors)
    #expect(pt.unwrappedKey == nil)
    #expect(pt.tensors.count > 100)
    #expect(Set(pt.tensors.keys) == Set(st.tensors.keys))
    #expect(pt.keys.count == pt.tensors.count)
    #expect(Set(pt.keys) == Set(pt.tensors.keys))
    #expect(pt.dtypes == st.dtypes)
    var compared = 0
    for (key, a) in pt.tensors {
      let b = try #require(st.tensors[key])
      #expect(a.shape == b.shape, "\(key)")
      #expect(a.storage.map(\.bitPattern) == b.storage.map(\.bitPattern), "\(key)")
      compared += a.count
    }
    #expect(compared > 1_000_000)
    // BatchNorm counters are the only int64 tensors; everything else is float32.
    for (key, dtype) in pt.dtypes {
      #expect(dtype == (key.hasSuffix("num_batches_tracked") ? .int64 : .float32), "\(key)")
    }
    #expect(pt.tensors.contains { $0.key.hasSuffix("num_batches_tracked") && $0.value.shape == [] })
  }

  @Test func checkpointLoadDetectsEitherFormat() throws {
    let viaPt = try Checkpoint.load(contentsOf: try Fixtures.url("models/tiny-l.pt"))
    let viaSt = try Checkpoint.load(contentsOf: try Fixtures.url("models/tiny-l.safetensors"))
    #expect(viaPt == viaSt)
    #expect(
      try SafeTensors.read(contentsOf: try Fixtures.url("models/tiny-l.safetensors")) == viaSt)
  }

  @Test func wrappedFloat16ArchiveEqualsUpToHalfRounding() throws {
    let half = try LoadedCheckpoint(contentsOf: try Fixtures.url("models/tiny-l.wrapped-fp16.pt"))
    let full = try Checkpoint.load(contentsOf: try Fixtures.url("models/tiny-l.safetensors"))
    #expect(half.unwrappedKey == "state_dict")
    #expect(Set(half.tensors.keys) == Set(full.keys))
    #expect(half.storedDTypes == [.float16, .int64])
    var inexact = 0
    for (key, h) in half.tensors {
      let f = try #require(full[key])
      #expect(h.shape == f.shape, "\(key)")
      guard h.shape == f.shape else { continue }
      for i in 0..<h.count {
        // Widening float16 is exact, so the result is exactly the float16 rounding of the
        // float32 value (round to nearest even, as torch's .half() does).
        let expected = Float(Float16(f.storage[i]))
        if h.storage[i].bitPattern != expected.bitPattern {
          inexact += 1
          if inexact < 5 { Issue.record("\(key)[\(i)]: \(h.storage[i]) vs \(expected)") }
        }
      }
    }
    #expect(inexact == 0)
    // Rounding really happened: the two files differ somewhere.
    #expect(half.tensors.contains { $0.value != full[$0.key] })
  }

  /// The prompt encoder and mask decoder are the same in every variant, so the small models'
  /// decoder keys, shapes and dtypes must be exactly the official manifests'.
  @Test(arguments: [("tiny-l.pt", "efficientvit-sam-l0"), ("tiny-xl.pt", "efficientvit-sam-xl1")])
  func decoderKeysMatchOfficialManifest(file: String, manifestName: String) throws {
    let loaded = try LoadedCheckpoint(contentsOf: try Fixtures.url("models/\(file)"))
    let notEncoder = { (key: String) in !key.hasPrefix("image_encoder.") }
    let expected = try Self.manifest(manifestName, where: notEncoder)
    #expect(expected.count == 137)
    let decoderKeys = Set(loaded.tensors.keys.filter(notEncoder))
    #expect(decoderKeys == Set(expected.keys))
    for (key, (shape, dtype)) in expected {
      guard let t = loaded.tensors[key] else { continue }
      #expect(formatShape(t.shape) == shape, "\(key)")
      #expect(loaded.dtypes[key]?.name == dtype, "\(key)")
    }
    #expect(loaded.tensors.keys.contains { $0.hasPrefix("image_encoder.backbone.") })
    #expect(loaded.tensors.keys.contains { $0.hasPrefix("image_encoder.neck.") })
  }

  /// The training fixture stores its masks as uint8.
  @Test func trainingFixtureWithByteMasksLoads() throws {
    let loaded = try LoadedCheckpoint(contentsOf: try Fixtures.url("train/step.safetensors"))
    let masks = try #require(loaded.tensors["masks"])
    #expect(loaded.dtypes["masks"] == .uint8)
    #expect(masks.shape == [2, 2, 512, 512])
    #expect(masks.storage.allSatisfy { $0 == 0 || $0 == 1 })
    #expect(masks.storage.contains(1) && masks.storage.contains(0))
    #expect(loaded.dtypes.values.filter { $0 == .float32 }.count == loaded.tensors.count - 1)
  }

  @Test func tinyXLLoadsCompletely() throws {
    let url = try Fixtures.url("models/tiny-xl.pt")
    let loaded = try LoadedCheckpoint(contentsOf: url)
    #expect(loaded.format == .pytorch)
    #expect(loaded.keys.count == loaded.tensors.count)
    // Every element came from the file: the byte count of all storages matches.
    let bytes = loaded.tensors.reduce(0) { $0 + $1.value.count * loaded.dtypes[$1.key]!.byteSize }
    let fileSize = try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int ?? 0
    #expect(bytes < fileSize && bytes > fileSize * 9 / 10)
    // The architecture file's widths appear as the stage-1 output channels.
    #expect(
      loaded.tensors["image_encoder.backbone.stages.0.op_list.0.conv.weight"]?.shape == [
        8, 3, 3, 3,
      ])
    for (key, t) in loaded.tensors {
      #expect(t.storage.allSatisfy { $0.isFinite }, "\(key)")
    }
  }
}
