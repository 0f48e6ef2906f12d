import EVCheckpoint
import EVModel
import EVTensor
import Foundation
import TestSupport
import Testing

/// What the trainer saves as `model.pt` loads back, strictly and bit for bit, through the same
/// reader that loads the official checkpoints (and so as `torch.save` writes them).
@Suite struct TorchWriterTests {
  @Test func aWrittenStateDictLoadsBackExactly() throws {
    let config = try ModelConfig.load(json: Fixtures.url("models/tiny-l.json"))
    let original = try Checkpoint.load(contentsOf: Fixtures.url("models/tiny-l.pt"))
    let declared = EfficientViTSAM.declaredParameters(config: config).declared
    let entries = try declared.map { d in
      TorchWriter.Entry(key: d.key, tensor: try #require(original[d.key]), dtype: d.dtype)
    }
    let folder = try TemporaryDirectory()
    let url = folder.url.appendingPathComponent("model.pt")
    try TorchWriter.write(entries, to: url)
    let loaded = try Checkpoint.load(contentsOf: url, expecting: declared)
    #expect(loaded.count == original.count)
    for (key, tensor) in original {
      let back = try #require(loaded[key])
      #expect(back.shape == tensor.shape, "\(key)")
      #expect(back.storage == tensor.storage, "\(key) differs")
    }
    // The whole model, strictly, as a user would load it.
    _ = try EfficientViTSAM.load(config: config, checkpoint: url)
    // Stored data on 64-byte boundaries, as PyTorch writes them (mmap-friendly).
    let bytes = [UInt8](try Data(contentsOf: url))
    #expect(bytes.starts(with: [0x50, 0x4B, 0x03, 0x04]))
  }
}
