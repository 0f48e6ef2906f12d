import EVCheckpoint
import EVImage
import EVModel
import EVPredictor
import EVServer
import EVTensor
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import TestSupport
import Testing

extension ServerTests {
  /// `POST /v1/embeddings`: the file `evsam embed` writes, cached as its image.
  @Suite struct EmbeddingUploadTests {
    /// tiny-l's encoder, identified from its checkpoint as `evsam serve` and `evsam embed` do.
    static func identity() throws -> EncoderIdentity {
      let tensors = try LoadedCheckpoint(contentsOf: Fixtures.url("models/tiny-l.pt")).tensors
      return EncoderIdentity(
        model: SegmentAnythingModel(try TestServer.model.get()), name: "tiny-l", tensors: tensors)
    }

    /// The embedding file of coffee.png, as `evsam embed` writes it.
    static func embeddingFile(_ encoder: EncoderIdentity) throws -> [UInt8] {
      let model = SegmentAnythingModel(try TestServer.model.get())
      let picture = try RGBImage(contentsOf: Fixtures.url("images/coffee.png"))
      let embedding = model.imageEncoder(model.encoderInput(picture))
      return [UInt8](
        try EmbeddingFile(
          embedding: embedding, originalSize: (picture.height, picture.width), encoder: encoder
        ).encoded())
    }

    static func post(_ client: any TestClientProtocol, _ bytes: [UInt8]) async throws
      -> TestResponse
    {
      try await client.execute(
        uri: "/v1/embeddings", method: .post,
        headers: [.contentType: "application/octet-stream"], body: ByteBuffer(bytes: bytes))
    }

    @Test func anUploadedEmbeddingAnswersAsItsImage() async throws {
      let encoder = try Self.identity()
      let file = try Self.embeddingFile(encoder)
      try await TestServer.withClient(encoder: encoder) { client, _ in
        let image = try await client.upload(try TestServer.coffeePNG())
        let response = try await Self.post(client, file)
        #expect(response.status == .created, "\(String(buffer: response.body))")
        let cached = try JSONDecoder().decode(ImageResponse.self, from: Data(buffer: response.body))
        #expect(cached.width == 600 && cached.height == 400 && cached.encodeMs == 0)
        #expect(response.headers[.location] == "/v1/images/\(cached.id)")
        let prompts = [
          SegmentRequest(points: [[300, 200]], labels: [1], multimask: true),
          SegmentRequest(box: [100, 80, 420, 330], multimask: false),
        ]
        for prompt in prompts {
          let fromImage = try await client.segment(image.id, prompt)
          let fromEmbedding = try await client.segment(cached.id, prompt)
          #expect(fromImage.prompts.map(\.masks.count) == fromEmbedding.prompts.map(\.masks.count))
          for (a, b) in zip(fromImage.prompts, fromEmbedding.prompts) {
            #expect(a.masks.map(\.segmentation) == b.masks.map(\.segmentation))
            #expect(a.masks.map(\.score) == b.masks.map(\.score))
          }
        }
        // Segment everything encodes crops of the image: an embedding has none.
        let everything = try await client.postJSON("/v1/images/\(cached.id)/everything", "{}")
        #expect(everything.status == .conflict && everything.apiError?.code == "no_pixels")
      }
    }

    @Test func filesFromElsewhereAreRefused() async throws {
      let encoder = try Self.identity()
      var other = encoder
      other.weights = String(repeating: "0", count: 16)
      let foreign = try Self.embeddingFile(other)
      try await TestServer.withClient(encoder: encoder) { client, _ in
        let mismatch = try await Self.post(client, foreign)
        #expect(mismatch.status == .unprocessableContent)
        #expect(mismatch.apiError?.code == "embedding_mismatch")
        #expect(mismatch.apiError?.message.contains("another image encoder") == true)
        let unrecorded = try SafeTensors.encode(
          ["image_embeddings": Tensor(repeating: 0, shape: [1, 256, 64, 64])])
        let old = try await Self.post(client, [UInt8](unrecorded))
        #expect(old.status == .unprocessableContent && old.apiError?.code == "embedding_mismatch")
        for garbage in [[UInt8](), Array("not a file".utf8), try TestServer.coffeePNG()] {
          let bad = try await Self.post(client, garbage)
          #expect(bad.status == .badRequest && bad.apiError?.code == "invalid_embedding")
        }
      }
      // A service that does not know its encoder cannot check a file.
      try await TestServer.withClient { client, _ in
        let refused = try await Self.post(client, try Self.embeddingFile(encoder))
        #expect(refused.status == .notImplemented)
        #expect(refused.apiError?.code == "embeddings_unsupported")
      }
    }
  }
}
