import EVImage
import EVPredictor
import EVTensor
import Foundation
import Synchronization

/// One uploaded image, ready for prompts: a predictor holding its embedding and the decoder's
/// per-image state, the decoded pixels (segment everything re-encodes crops; none when the
/// embedding itself was uploaded), and the low-res masks handed out for refinement.
///
/// `SamPredictor` is a class without `Sendable`; it is configured once (`setImage`) before the
/// entry is published, and from then on only its `predictBatch` runs, which reads the per-image
/// state and keeps its scratch per call, so concurrent use from several workers is safe.
public final class CachedImage: @unchecked Sendable {
  public let id: String
  public let width: Int
  public let height: Int
  public let encodeTime: Duration
  /// What the entry may hold at most, counted against the cache bound.
  public let bytes: Int
  let predictor: SamPredictor
  let image: RGBImage?
  private let handles: Mutex<HandleStore>

  convenience init(
    id: String, predictor: SamPredictor, image: RGBImage, encodeTime: Duration, maxHandles: Int
  ) {
    self.init(
      id: id, predictor: predictor, image: image, width: image.width, height: image.height,
      encodeTime: encodeTime, maxHandles: maxHandles)
  }

  /// An entry made from an uploaded embedding: no pixels.
  init(
    id: String, predictor: SamPredictor, image: RGBImage?, width: Int, height: Int,
    encodeTime: Duration, maxHandles: Int
  ) {
    self.id = id
    self.width = width
    self.height = height
    self.predictor = predictor
    self.image = image
    self.encodeTime = encodeTime
    self.handles = Mutex(HandleStore(limit: maxHandles))
    bytes = Self.estimatedBytes(
      width: width, height: height, maxHandles: maxHandles, pixels: image != nil)
  }

  /// The bytes an image of this size takes in the cache: its RGB pixels, the embedding
  /// (1×256×64×64 floats) held by the predictor and, prepared from it for the decoder, the
  /// token-major embedding, positional encoding, no-mask keys and the folded upscaling's base
  /// (each as large), the first block's three half-width projections, the eight half-width
  /// projections of the per-image basis (`SecondBlockBasis`) and the three of its LayerNorm
  /// statistics (`NormStatisticsBasis`, with three values per image token); plus room for
  /// `maxHandles` 256×256 low-res masks.
  public static func estimatedBytes(width: Int, height: Int, maxHandles: Int, pixels: Bool = true)
    -> Int
  {
    let tokens = 64 * 64
    let embedding = 256 * tokens * MemoryLayout<Float>.size
    let decoderState =
      5 * embedding + (3 + 8 + 3) * embedding / 2 + 3 * tokens * MemoryLayout<Float>.size
    return (pixels ? width * height * 3 : 0) + decoderState + maxHandles * lowResBytes
  }

  static let lowResSide = 256
  static let lowResBytes = lowResSide * lowResSide * MemoryLayout<Float>.size

  /// Keeps a 256×256 low-res mask and returns its handle; the oldest one is dropped when the
  /// entry holds its limit.
  func storeHandle(_ logits: [Float]) -> String {
    handles.withLock { $0.insert(logits) }
  }

  /// The mask behind `handle`, as 1×256×256 logits.
  func lowResMask(_ handle: String) -> Tensor? {
    handles.withLock { $0.get(handle) }.map {
      Tensor(shape: [1, Self.lowResSide, Self.lowResSide], storage: $0)
    }
  }
}

/// The newest `limit` low-res masks of one image, by handle.
private struct HandleStore {
  let limit: Int
  var next = 0
  var order: [String] = []
  var masks: [String: [Float]] = [:]

  init(limit: Int) { self.limit = limit }

  mutating func insert(_ logits: [Float]) -> String {
    next += 1
    let handle = "m" + String(next, radix: 16)
    masks[handle] = logits
    order.append(handle)
    if order.count > limit {
      masks[order.removeFirst()] = nil
    }
    return handle
  }

  func get(_ handle: String) -> [Float]? { masks[handle] }
}

/// Uploaded images by id, least recently used first out when their bytes pass the bound.
public final class EmbeddingCache: Sendable {
  public struct Stats: Sendable, Equatable, Codable {
    public var images: Int
    public var bytes: Int
    public var limitBytes: Int
    public var evictions: Int

    enum CodingKeys: String, CodingKey {
      case images, bytes, evictions
      case limitBytes = "limit_bytes"
    }
  }

  private struct State {
    var entries: [String: (entry: CachedImage, lastUse: UInt64)] = [:]
    var bytes = 0
    var clock: UInt64 = 0
    var evictions = 0
  }

  public let limitBytes: Int
  private let state = Mutex(State())

  public init(limitBytes: Int) {
    self.limitBytes = limitBytes
  }

  /// Adds `entry`, evicting the least recently used images until it fits. An entry larger than
  /// the whole bound is refused (false).
  @discardableResult
  public func insert(_ entry: CachedImage) -> Bool {
    guard entry.bytes <= limitBytes else { return false }
    state.withLock { s in
      if let old = s.entries.removeValue(forKey: entry.id) { s.bytes -= old.entry.bytes }
      while s.bytes + entry.bytes > limitBytes,
        let oldest = s.entries.min(by: { $0.value.lastUse < $1.value.lastUse })
      {
        s.entries[oldest.key] = nil
        s.bytes -= oldest.value.entry.bytes
        s.evictions += 1
      }
      s.clock += 1
      s.entries[entry.id] = (entry, s.clock)
      s.bytes += entry.bytes
    }
    return true
  }

  /// The image with this id, marked as just used.
  public func get(_ id: String) -> CachedImage? {
    state.withLock { s in
      guard let found = s.entries[id] else { return nil }
      s.clock += 1
      s.entries[id]!.lastUse = s.clock
      return found.entry
    }
  }

  /// Forgets an image; false if it was not there.
  @discardableResult
  public func remove(_ id: String) -> Bool {
    state.withLock { s in
      guard let old = s.entries.removeValue(forKey: id) else { return false }
      s.bytes -= old.entry.bytes
      return true
    }
  }

  public var stats: Stats {
    state.withLock { s in
      Stats(images: s.entries.count, bytes: s.bytes, limitBytes: limitBytes, evictions: s.evictions)
    }
  }
}
