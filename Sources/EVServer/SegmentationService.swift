import EVImage
import EVMask
import EVMaskGenerator
import EVModel
import EVPredictor
import EVTensor
import Foundation
import Logging
import Synchronization

/// The model behind the HTTP API: uploads become cached embeddings, prompts become masks.
///
/// Everything that touches the model runs on `compute`'s threads; the request tasks only
/// validate input and wait, so the server answers health checks and refusals while the
/// workers are busy.
public final class SegmentationService: Sendable {
  public let model: SegmentAnythingModel
  public let modelName: String
  /// What the model's image encoder is, for checking uploaded embeddings (`evsam embed`'s
  /// files); nil refuses them.
  public let encoder: EncoderIdentity?
  public let configuration: ServerConfiguration
  public let cache: EmbeddingCache
  public let compute: ComputeQueue
  /// Open connections against `maxConnections`, kept by the application's channel handlers.
  public let connections: ConnectionCounter
  let logger: Logger
  private let started = ContinuousClock.now
  /// Resident memory when the service was made (the model, the runtime): the part of the
  /// memory budget that is not the cache's or the retained heap's.
  private let baselineBytes = ProcessMemory.residentBytes()
  /// Times the free heap was handed back to the system (`boundRetainedMemory`).
  private let heapReleases = Atomic<Int>(0)
  /// Segment-everything runs take turns: each already spreads its prompt groups over every
  /// core (one kernel thread per group, `ComputeThreads.limited`) and holds hundreds of
  /// megabytes of candidate masks, so two at once would add memory, not speed.
  private let everythingTurn = Mutex(())

  public init(
    model: SegmentAnythingModel, modelName: String, configuration: ServerConfiguration,
    encoder: EncoderIdentity? = nil, logger: Logger = Logger(label: "evsam.server")
  ) {
    self.model = model
    self.modelName = modelName
    self.encoder = encoder
    self.configuration = configuration
    self.logger = logger
    cache = EmbeddingCache(limitBytes: configuration.cacheBytes)
    compute = ComputeQueue(workers: configuration.workers, capacity: configuration.queueCapacity)
    connections = ConnectionCounter(limit: configuration.maxConnections)
  }

  public convenience init(
    model: EfficientViTSAM, modelName: String, configuration: ServerConfiguration,
    encoder: EncoderIdentity? = nil, logger: Logger = Logger(label: "evsam.server")
  ) {
    self.init(
      model: SegmentAnythingModel(model), modelName: modelName, configuration: configuration,
      encoder: encoder, logger: logger)
  }

  /// Stops the workers after the work already queued.
  public func shutdown() {
    compute.shutdown()
  }

  // MARK: Images

  /// Decodes and encodes an uploaded PNG, JPEG, TIFF or WebP image and caches its embedding.
  public func addImage(_ bytes: [UInt8], deadline: ContinuousClock.Instant) async throws
    -> ImageResponse
  {
    guard !bytes.isEmpty else {
      throw APIError(
        .badRequest, code: "invalid_image",
        "the request body is empty: send PNG, JPEG, TIFF or WebP bytes")
    }
    guard ImageFormat.detect(bytes) != nil else {
      let head = bytes.prefix(8).map { String(format: "%02X", $0) }.joined(separator: " ")
      throw APIError(
        .unsupportedMediaType, code: "unsupported_media_type",
        "the upload is not a PNG, JPEG, TIFF or WebP image (it starts with bytes \(head))")
    }
    if let size = ImageFormat.dimensions(bytes) {
      try checkDimensions(width: size.width, height: size.height)
    }
    let configuration = configuration
    let model = model
    let entry = try await compute.run(deadline: deadline, limit: configuration.requestTimeout) {
      let image: RGBImage
      do {
        image = try RGBImage(data: Data(bytes))
      } catch let error as ImageError {
        throw Self.apiError(error)
      }
      // The header probe may not have found the size (an unusual JPEG layout).
      try self.checkDimensions(width: image.width, height: image.height)
      let predictor = SamPredictor(model: model)
      let start = ContinuousClock.now
      do {
        try predictor.setImage(image)
      } catch let error as PredictorError {
        throw Self.apiError(error)
      }
      let encodeTime = ContinuousClock.now - start
      // The encoder's scratch is free now: trimmed on the worker, before the job counts as
      // done, so a health check never sees the job over and its memory still held.
      self.boundRetainedMemory()
      return CachedImage(
        id: Self.newID(), predictor: predictor, image: image,
        encodeTime: encodeTime, maxHandles: configuration.maskHandlesPerImage)
    }
    return try publish(entry, event: "encoded image")
  }

  /// The embedding `evsam embed IMAGE -o FILE` wrote, cached as if its image had been uploaded:
  /// every prompt costs one decode. The file must come from this model's image encoder (its
  /// weights and preprocessing, recorded in the file); segment everything, which encodes
  /// crops of the image, needs the image itself.
  public func addEmbedding(_ bytes: [UInt8], deadline: ContinuousClock.Instant) async throws
    -> ImageResponse
  {
    guard let encoder else {
      throw APIError(
        .notImplemented, code: "embeddings_unsupported",
        "this server does not know its encoder's weights, so it cannot check an embedding: upload the image"
      )
    }
    guard !bytes.isEmpty else {
      throw APIError(
        .badRequest, code: "invalid_embedding",
        "the request body is empty: send the file `evsam embed IMAGE -o FILE` wrote")
    }
    let file: EmbeddingFile
    do {
      file = try EmbeddingFile.read(Data(bytes), name: "the upload", expecting: encoder)
    } catch {
      switch error.kind {
      case .unreadable:
        throw APIError(.badRequest, code: "invalid_embedding", error.description)
      case .unidentified, .otherEncoder:
        throw APIError(.unprocessableContent, code: "embedding_mismatch", error.description)
      }
    }
    let (height, width) = file.originalSize
    try checkDimensions(width: width, height: height)
    let configuration = configuration
    let model = model
    let entry = try await compute.run(deadline: deadline, limit: configuration.requestTimeout) {
      let predictor = SamPredictor(model: model)
      do {
        try predictor.setEmbedding(file.embedding, originalSize: file.originalSize)
      } catch let error as PredictorError {
        throw Self.apiError(error)
      }
      return CachedImage(
        id: Self.newID(), predictor: predictor, image: nil, width: width, height: height,
        encodeTime: .zero, maxHandles: configuration.maskHandlesPerImage)
    }
    return try publish(entry, event: "cached an uploaded embedding")
  }

  /// Puts a new entry in the cache and answers with it.
  private func publish(_ entry: CachedImage, event: Logger.Message) throws -> ImageResponse {
    let inserted = cache.insert(entry)
    // An eviction frees an image's blocks.
    boundRetainedMemory()
    guard inserted else {
      // checkDimensions refuses images the cache cannot hold, so this is a race-free safety net.
      throw APIError(
        .contentTooLarge, code: "image_too_large",
        "the image needs \(entry.bytes >> 20) MiB of cache but the bound is \(cache.limitBytes >> 20) MiB"
      )
    }
    logger.info(
      event,
      metadata: [
        "image.id": "\(entry.id)", "image.size": "\(entry.width)x\(entry.height)",
        "encode.ms": "\(Int(entry.encodeTime.milliseconds.rounded()))",
      ])
    return ImageResponse(
      id: entry.id, width: entry.width, height: entry.height,
      encodeMs: entry.encodeTime.milliseconds, model: modelName, cacheBytes: entry.bytes)
  }

  /// Forgets an uploaded image; false if it is not cached.
  @discardableResult
  public func removeImage(_ id: String) -> Bool {
    cache.remove(id)
  }

  func checkDimensions(width: Int, height: Int) throws(APIError) {
    let c = configuration
    guard width > 0, height > 0 else {
      throw APIError(.badRequest, code: "invalid_image", "the image is empty (\(width)×\(height))")
    }
    guard width <= c.maxImageSide, height <= c.maxImageSide, width * height <= c.maxImagePixels
    else {
      throw APIError(
        .contentTooLarge, code: "image_too_large",
        "the image is \(width)×\(height) pixels; this server accepts at most \(c.maxImageSide) "
          + "pixels a side and \(c.maxImagePixels) pixels in all")
    }
    let bytes = CachedImage.estimatedBytes(
      width: width, height: height, maxHandles: c.maskHandlesPerImage)
    guard bytes <= c.cacheBytes else {
      throw APIError(
        .contentTooLarge, code: "image_too_large",
        "the image needs \(bytes >> 20) MiB of cache but the bound (--cache-mb) is "
          + "\(c.cacheBytes >> 20) MiB")
    }
  }

  /// A predictor's refusal: the prompt's fault (422), or the model's when its outputs are not
  /// finite (500: the checkpoint or the input broke the model, no prompt can fix that).
  static func apiError(_ error: PredictorError) -> APIError {
    switch error {
    case .nonFiniteEmbedding, .nonFiniteOutput:
      APIError(.internalServerError, code: "non_finite_output", error.description)
    default:
      APIError.invalidPrompt(error.description)
    }
  }

  static func apiError(_ error: ImageError) -> APIError {
    switch error.kind {
    case .unknownFormat:
      APIError(.unsupportedMediaType, code: "unsupported_media_type", error.message)
    case .unsupported:
      APIError(.unsupportedMediaType, code: "unsupported_image", error.message)
    case .tooLarge:
      APIError(.contentTooLarge, code: "image_too_large", error.message)
    default:
      APIError(.badRequest, code: "invalid_image", "the image cannot be decoded: \(error.message)")
    }
  }

  /// 128 random bits in hex: ids cannot be guessed or collide.
  static func newID() -> String {
    var generator = SystemRandomNumberGenerator()
    return (0..<2).map { _ in
      let hex = String(generator.next() as UInt64, radix: 16)
      return String(repeating: "0", count: 16 - hex.count) + hex
    }.joined()
  }

  func image(_ id: String) throws(APIError) -> CachedImage {
    guard let entry = cache.get(id) else { throw .imageNotFound(id) }
    return entry
  }

  // MARK: Segment

  /// Validated prompts, in the form `predictBatch` takes.
  struct PromptPlan: Sendable {
    var pointSets: [[Point]]?
    var labelSets: [[Int]]?
    var boxes: [Box]?
    var maskInputs: Tensor?
    var multimask: Bool
  }

  /// Masks for the prompts of `request` on a cached image.
  public func segment(
    imageID: String, _ request: SegmentRequest, deadline: ContinuousClock.Instant
  ) async throws -> SegmentResponse {
    let entry = try image(imageID)
    let plan = try plan(request, for: entry)
    return try await compute.run(deadline: deadline, limit: configuration.requestTimeout) {
      // Full-size logits of many masks can be hundreds of MiB; they are free once the answer
      // is encoded.
      defer { self.boundRetainedMemory() }
      return try Self.decode(plan, on: entry)
    }
  }

  func plan(_ request: SegmentRequest, for entry: CachedImage) throws(APIError) -> PromptPlan {
    let c = configuration
    var boxes: [[Double]]?
    switch (request.box, request.boxes) {
    case (.some, .some):
      throw .invalidPrompt("give either box or boxes, not both")
    case (let box?, nil):
      boxes = [box]
    case (nil, let list?):
      guard !list.isEmpty else { throw .invalidPrompt("boxes is empty; leave it out for no box") }
      guard list.count <= c.maxBoxes else {
        throw .invalidPrompt(
          "\(list.count) boxes; this server takes at most \(c.maxBoxes) per request")
      }
      boxes = list
    case (nil, nil):
      break
    }
    for (i, box) in (boxes ?? []).enumerated() {
      let name = request.box != nil ? "box" : "box \(i)"
      guard box.count == 4 else {
        throw .invalidPrompt("\(name) has \(box.count) values; give [x0, y0, x1, y1]")
      }
      guard box.allSatisfy(\.isFinite) else {
        throw .invalidPrompt("\(name) has a non-finite value")
      }
      guard box[0] <= box[2], box[1] <= box[3] else {
        throw .invalidPrompt("\(name) \(box) is inverted: need x0 ≤ x1 and y0 ≤ y1")
      }
    }

    let points = request.points ?? []
    let labels = request.labels ?? []
    guard points.count <= c.maxPoints else {
      throw .invalidPrompt(
        "\(points.count) points; this server takes at most \(c.maxPoints) per prompt")
    }
    guard labels.count == points.count else {
      throw .invalidPrompt(
        "\(points.count) point\(points.count == 1 ? "" : "s") but \(labels.count) label"
          + "\(labels.count == 1 ? "" : "s"); give one label (1 foreground, 0 background) per point"
      )
    }
    for (i, p) in points.enumerated() {
      guard p.count == 2 else {
        throw .invalidPrompt("point \(i) has \(p.count) values; give [x, y]")
      }
      guard p[0].isFinite, p[1].isFinite else {
        throw .invalidPrompt("point \(i) has a non-finite value")
      }
      guard labels[i] == 0 || labels[i] == 1 else {
        throw .invalidPrompt(
          "label \(i) is \(labels[i]); labels are 1 (foreground) or 0 (background)")
      }
    }
    // Checked above: every box has 4 values and every point 2.
    let prompts = (
      points: points.map { Point(x: $0[0], y: $0[1]) },
      boxes: boxes?.map { Box(x0: $0[0], y0: $0[1], x1: $0[2], y1: $0[3]) }
    )
    // The command line's rule, from the one place that states it.
    do throws(PredictorError) {
      try SamPredictor.checkInsideImage(
        points: prompts.points, boxes: prompts.boxes ?? [], width: entry.width,
        height: entry.height)
    } catch {
      throw .outOfBounds(error.description)
    }

    var mask: Tensor?
    if let handle = request.maskInput {
      guard let m = entry.lowResMask(handle) else { throw .maskNotFound(handle) }
      mask = m
    }
    guard !points.isEmpty || boxes != nil || mask != nil else {
      throw .invalidPrompt("no prompt: give points with labels, a box, boxes or a mask_input")
    }

    let batch = boxes?.count ?? 1
    let multimask = request.multimask ?? true
    let masks = batch * (multimask ? 3 : 1)
    guard masks * entry.width * entry.height <= c.maxMaskPixels else {
      throw .invalidPrompt(
        "this request would make \(masks) masks of \(entry.width)×\(entry.height) pixels; this "
          + "server makes at most \(c.maxMaskPixels) mask pixels per request: send fewer boxes, "
          + "or multimask false")
    }
    return PromptPlan(
      pointSets: points.isEmpty ? nil : Array(repeating: prompts.points, count: batch),
      labelSets: points.isEmpty ? nil : Array(repeating: labels, count: batch),
      boxes: prompts.boxes,
      maskInputs: mask.map { m in
        let side = CachedImage.lowResSide
        return Tensor(
          shape: [batch, 1, side, side],
          storage: Array([[Float]](repeating: m.storage, count: batch).joined()))
      },
      multimask: multimask)
  }

  /// Runs the decoder and turns its logits into COCO RLE masks with refinement handles.
  static func decode(_ plan: PromptPlan, on entry: CachedImage) throws -> SegmentResponse {
    let start = ContinuousClock.now
    let prediction: BatchPrediction
    do {
      prediction = try entry.predictor.predictBatch(
        boxes: plan.boxes, pointSets: plan.pointSets, labelSets: plan.labelSets,
        maskInputs: plan.maskInputs, multimask: plan.multimask, upscale: true)
    } catch {
      throw Self.apiError(error)
    }
    let decodeTime = ContinuousClock.now - start
    guard let logits = prediction.maskLogits else {
      throw APIError(
        .internalServerError, code: "internal", "the predictor returned no full-size masks")
    }
    let (batch, candidates) = (prediction.batchSize, prediction.masksPerPrompt)
    let (h, w) = (entry.height, entry.width)
    let plane = h * w
    let lowPlane = CachedImage.lowResSide * CachedImage.lowResSide
    let scores = prediction.iouPredictions.storage
    var prompts: [PromptResult] = []
    logits.withUnsafeBufferPointer { full in
      prediction.lowResLogits.withUnsafeBufferPointer { low in
        for b in 0..<batch {
          var masks: [MaskResult] = []
          for c in 0..<candidates {
            let i = b * candidates + c
            let rle = RLE(
              rowMajor: UnsafeBufferPointer(rebasing: full[(i * plane)..<((i + 1) * plane)]),
              threshold: 0, height: h, width: w)
            let handle = entry.storeHandle(Array(low[(i * lowPlane)..<((i + 1) * lowPlane)]))
            masks.append(
              MaskResult(
                segmentation: rle, score: Double(scores[i]), area: rle.area,
                bbox: rle.boundingBox.array, handle: handle))
          }
          let best = masks.indices.max { masks[$0].score < masks[$1].score } ?? 0
          prompts.append(PromptResult(best: best, masks: masks))
        }
      }
    }
    return SegmentResponse(
      imageId: entry.id, width: w, height: h, multimask: plan.multimask,
      decodeMs: decodeTime.milliseconds, prompts: prompts)
  }

  // MARK: Everything

  /// SAM's automatic mask generator on a cached image; the JSON document `evsam everything`
  /// writes, with the image id in place of the file name.
  public func everything(
    imageID: String, _ request: EverythingRequest, deadline: ContinuousClock.Instant
  ) async throws -> Data {
    let entry = try image(imageID)
    guard entry.image != nil else {
      throw APIError(
        .conflict, code: "no_pixels",
        "image \(imageID) was uploaded as an embedding: segment everything encodes crops of the image, so upload the image itself"
      )
    }
    let settings = try generatorSettings(request)
    let model = model
    let modelName = modelName
    let document = try await compute.run(deadline: deadline, limit: configuration.requestTimeout) {
      let document = try self.everythingDocument(
        entry: entry, settings: settings, model: model, modelName: modelName)
      // The generator's crops, batches and masks are free now (often the largest working
      // memory the server makes): trimmed on the worker, before the job counts as done.
      self.boundRetainedMemory()
      return document
    }
    logger.info(
      "segmented everything",
      metadata: ["image.id": "\(entry.id)", "bytes": "\(document.count)"])
    return document
  }

  /// Runs the generator and encodes its answer; everything it made but the JSON is freed on
  /// return.
  private func everythingDocument(
    entry: CachedImage, settings: MaskGeneratorSettings, model: SegmentAnythingModel,
    modelName: String
  ) throws -> Data {
    let result = try everythingTurn.withLock { _ in
      // The generator encodes each crop itself (crop 0 is the whole image).
      let generator = try AutomaticMaskGenerator(model: model, settings: settings)
      return try generator.generate(entry.image!)
    }
    let t = result.timing
    let document: [String: Any] = [
      "image": entry.id, "model": modelName, "size": [entry.height, entry.width],
      "settings": settings.jsonRecord,
      "annotations": result.masks.map { $0.jsonRecord(outputMode: settings.outputMode) },
      "timing_ms": [
        "encoder": t.encoder.milliseconds, "decoder": t.decoder.milliseconds,
        "postprocess": t.postprocess.milliseconds, "filtering": t.filtering.milliseconds,
        "total": t.total.milliseconds,
      ],
    ]
    return try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])
  }

  func generatorSettings(_ r: EverythingRequest) throws(APIError) -> MaskGeneratorSettings {
    func invalid(_ message: String) -> APIError {
      APIError(.unprocessableContent, code: "invalid_settings", message)
    }
    let c = configuration
    var s = MaskGeneratorSettings()
    if let grids = r.pointGrids {
      guard r.pointsPerSide == nil else {
        throw invalid("give points_per_side or point_grids, not both")
      }
      let total = grids.reduce(0) { $0 + $1.count }
      guard total <= c.maxPointsPerSide * c.maxPointsPerSide * (c.maxCropLayers + 1) else {
        throw invalid(
          "point_grids has \(total) points; this server takes at most \(c.maxPointsPerSide)² per layer"
        )
      }
      for (i, grid) in grids.enumerated() {
        guard grid.allSatisfy({ $0.count == 2 }) else {
          throw invalid("point grid \(i) must be a list of [x, y] pairs in [0, 1]")
        }
      }
      s.pointsPerSide = nil
      s.pointGrids = grids.map { $0.map { Point(x: $0[0], y: $0[1]) } }
    } else if let n = r.pointsPerSide {
      guard (1...c.maxPointsPerSide).contains(n) else {
        throw invalid("points_per_side must be 1…\(c.maxPointsPerSide) on this server, got \(n)")
      }
      s.pointsPerSide = n
    }
    if let n = r.pointsPerBatch {
      guard (1...1024).contains(n) else {
        throw invalid("points_per_batch must be 1…1024, got \(n)")
      }
      s.pointsPerBatch = n
    }
    if let n = r.cropNLayers {
      guard (0...c.maxCropLayers).contains(n) else {
        throw invalid("crop_n_layers must be 0…\(c.maxCropLayers) on this server, got \(n)")
      }
      s.cropNLayers = n
    }
    if let v = r.predIoUThresh { s.predIoUThresh = v }
    if let v = r.stabilityScoreThresh { s.stabilityScoreThresh = v }
    if let v = r.stabilityScoreOffset { s.stabilityScoreOffset = v }
    if let v = r.boxNMSThresh { s.boxNMSThresh = v }
    if let v = r.cropNMSThresh { s.cropNMSThresh = v }
    if let v = r.cropOverlapRatio { s.cropOverlapRatio = v }
    if let v = r.cropNPointsDownscaleFactor { s.cropNPointsDownscaleFactor = v }
    if let v = r.minMaskRegionArea { s.minMaskRegionArea = v }
    switch r.outputMode ?? OutputMode.cocoRLE.rawValue {
    case OutputMode.cocoRLE.rawValue: s.outputMode = .cocoRLE
    case OutputMode.uncompressedRLE.rawValue: s.outputMode = .uncompressedRLE
    case let other:
      throw invalid(
        "output_mode \"\(other)\" is not served: use coco_rle (default) or uncompressed_rle "
          + "(binary masks have no JSON form; evsam everything writes them as PNG files)")
    }
    do {
      _ = try s.layerPointGrids()
    } catch {
      throw invalid(error.description)
    }
    return s
  }

  // MARK: Memory

  /// The most the process should keep resident between jobs: its footprint when the service
  /// started, the cache bound and the retained heap.
  public var memoryBudgetBytes: Int {
    // Saturating: a configuration may say "no bound" with Int.max.
    let (partial, first) = baselineBytes.addingReportingOverflow(configuration.cacheBytes)
    let (sum, second) = partial.addingReportingOverflow(configuration.retainedHeapBytes)
    return first || second ? Int.max : sum
  }

  /// Hands the free heap back to the system when the process is above `memoryBudgetBytes`.
  /// Below it, freed blocks stay for the next job (the allocator's policy, for speed); above
  /// it they are what makes resident memory grow past the cache bound: glibc keeps each
  /// arena's high-water mark, and with several threads encoding, evicting and running the
  /// mask generator, those marks add up.
  func boundRetainedMemory() {
    guard ProcessMemory.residentBytes() > memoryBudgetBytes else { return }
    if HeapPolicy.releaseFreeMemory() {
      heapReleases.wrappingAdd(1, ordering: .relaxed)
    }
  }

  /// Times the free heap went back to the system.
  public var heapReleaseCount: Int { heapReleases.load(ordering: .relaxed) }

  // MARK: Status

  public func health() -> HealthResponse {
    HealthResponse(
      status: "ok", model: modelName, uptimeS: (ContinuousClock.now - started).seconds,
      cache: cache.stats, queue: compute.stats, rssBytes: ProcessMemory.residentBytes(),
      connections: connections.stats)
  }

  public func models() -> ModelsResponse {
    let side = ModelConfig.embeddingSize
    return ModelsResponse(models: [
      ModelInfo(
        name: modelName, encoderInputSize: model.imageEncoder.inputSize,
        promptFrameSize: EfficientViTSAM.promptFrameSize,
        embeddingShape: [1, ModelConfig.embeddingChannels, side, side],
        lowResMaskSize: CachedImage.lowResSide)
    ])
  }
}
