// The server subcommands need EVServer (and with it Hummingbird). Until every build of the
// package links it, these files compile to nothing where the module is absent, and
// `serverCommands` (registered in EVSam.swift) is empty there.
#if canImport(EVServer)
  import ArgumentParser
  import EVLoadTest
  import EVPredictor
  import EVServer
  import EVTensor
  import Foundation
  import Logging
  import Synchronization

  struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "serve",
      abstract: "Serve segmentation over HTTP, with a click-to-segment page at /.",
      discussion: """
        Upload an image once (POST /v1/images), then send point, box and mask prompts \
        (POST /v1/images/{id}/segment) and get COCO RLE masks back; segment everything with \
        POST /v1/images/{id}/everything. The API is described at /openapi.json. Binds loopback \
        unless --host says otherwise (the service has no authentication); stops gracefully on \
        SIGINT or SIGTERM, finishing the requests in flight.
        """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Address to bind; 0.0.0.0 exposes the service to the network.")
    var host = "127.0.0.1"

    @Option(help: "TCP port (0 picks a free one).")
    var port = 8080

    @Option(
      help: ArgumentHelp(
        "Embedding cache bound; least recently used images leave first.", valueName: "MiB"))
    var cacheMb = 1024

    @Option(
      help: ArgumentHelp(
        "Freed memory kept for the next job beyond the model and the cache bound; "
          + "above it the free heap goes back to the system.", valueName: "MiB"))
    var retainHeapMb = 256

    @Option(help: "Threads running the model (each also spreads its kernels over the cores).")
    var workers = 2

    @Option(help: "Requests that may wait for a worker; more are refused with 503 and Retry-After.")
    var queue = 32

    @Option(
      help: ArgumentHelp("Time allowed per request, from arrival to answer.", valueName: "seconds"))
    var requestTimeout: Double = 60

    @Option(
      help: ArgumentHelp(
        "Time a request head (request line and headers) has to arrive in whole, from the "
          + "connection's opening or from the first byte of a later request; slower connections "
          + "are closed.", valueName: "seconds"))
    var headerTimeout: Double = 10

    @Option(
      help: ArgumentHelp(
        "Time an idle keep-alive connection stays open between requests.", valueName: "seconds"))
    var idleTimeout: Double = 75

    @Option(
      help: "Connections open at once; one more is closed as soon as it is accepted, unanswered.")
    var maxConnections = 256

    @Option(help: ArgumentHelp("Largest upload.", valueName: "MiB"))
    var maxUploadMb = 32

    @Option(help: "Largest image side, in pixels.")
    var maxImageSide = 8192

    @Option(help: "Largest image area, in pixels.")
    var maxImagePixels = 4096 * 4096

    @Option(
      name: .customLong("cors-origin"),
      help: ArgumentHelp(
        "An origin whose web pages may call the API from the browser (CORS), e.g. https://app.example.com; * for any; repeat for several. None by default.",
        valueName: "origin"))
    var corsOrigins: [String] = []

    @Flag(
      help: ArgumentHelp(
        "Also speak Label Studio's ML backend protocol (/health, /setup, /predict, /webhook): point a Label Studio project's model at this server for interactive SAM. The token for Label Studio's files comes from LABEL_STUDIO_API_KEY; BASIC_AUTH_USER and BASIC_AUTH_PASS put these routes behind HTTP Basic auth."
      ))
    var labelStudio = false

    @Option(
      help: ArgumentHelp(
        "Label Studio's address, for fetching task images (default: LABEL_STUDIO_URL).",
        valueName: "url"))
    var labelStudioURL: String?

    @Option(
      help: ArgumentHelp(
        "The folder Label Studio serves local files from, read directly instead of over HTTP (default: LOCAL_FILES_DOCUMENT_ROOT).",
        valueName: "dir"))
    var labelStudioFiles: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    func validate() throws {
      if (labelStudioURL != nil || labelStudioFiles != nil) && !labelStudio {
        throw ValidationError("--label-studio-url and --label-studio-files go with --label-studio")
      }
      if let labelStudioURL {
        guard labelStudioURL.hasPrefix("http://") || labelStudioURL.hasPrefix("https://"),
          URL(string: labelStudioURL)?.host != nil
        else {
          throw ValidationError("--label-studio-url must be an http:// or https:// address")
        }
      }
      guard Logger.Level(rawValue: logLevel) != nil else {
        throw ValidationError(
          "--log-level must be trace, debug, info, notice, warning, error or critical")
      }
      for (name, value) in [
        ("--request-timeout", requestTimeout), ("--header-timeout", headerTimeout),
        ("--idle-timeout", idleTimeout),
      ] {
        // A day at most: longer is surely a mistake, and it keeps the conversion to whole
        // nanoseconds far from overflowing.
        guard value > 0, value <= 86_400 else {
          throw ValidationError("\(name) must be a positive number of seconds, at most 86400")
        }
      }
      let problems = serverConfiguration().problems()
      guard problems.isEmpty else { throw ValidationError(problems.joined(separator: "; ")) }
    }

    func serverConfiguration() -> ServerConfiguration {
      var c = ServerConfiguration()
      c.host = host
      c.port = port
      c.cacheBytes = Self.bytes(mebibytes: cacheMb)
      c.retainedHeapBytes = Self.bytes(mebibytes: retainHeapMb)
      c.workers = workers
      c.queueCapacity = queue
      c.requestTimeout = Self.duration(requestTimeout)
      c.headerTimeout = Self.duration(headerTimeout)
      c.idleTimeout = Self.duration(idleTimeout)
      c.maxConnections = maxConnections
      c.maxUploadBytes = Self.bytes(mebibytes: maxUploadMb)
      c.maxImageSide = maxImageSide
      c.maxImagePixels = maxImagePixels
      c.corsOrigins = corsOrigins
      if labelStudio {
        let environment = ProcessInfo.processInfo.environment
        let url =
          labelStudioURL ?? environment["LABEL_STUDIO_URL"] ?? environment["LABEL_STUDIO_HOST"]
        let files = labelStudioFiles ?? environment["LOCAL_FILES_DOCUMENT_ROOT"]
        // As label-studio-ml-backend: both set, and its routes require HTTP Basic auth.
        var basicAuth: LabelStudioSettings.BasicAuth?
        if let user = environment["BASIC_AUTH_USER"], let password = environment["BASIC_AUTH_PASS"],
          !user.isEmpty
        {
          basicAuth = .init(user: user, password: password)
        }
        c.labelStudio = LabelStudioSettings(
          url: url.flatMap(URL.init(string:)),
          apiKey: environment["LABEL_STUDIO_API_KEY"] ?? environment["LABEL_STUDIO_ACCESS_TOKEN"],
          localFilesRoot: files.map { URL(fileURLWithPath: $0) }, basicAuth: basicAuth)
      }
      return c
    }

    /// `mebibytes` MiB in bytes, saturating instead of overflowing (a huge value then fails
    /// the configuration's checks or is simply no limit, rather than trapping).
    static func bytes(mebibytes: Int) -> Int {
      let (product, overflow) = mebibytes.multipliedReportingOverflow(by: 1 << 20)
      return overflow ? (mebibytes < 0 ? Int.min : Int.max) : product
    }

    /// Whole milliseconds; values `validate` refuses (NaN, huge) become 0, which the
    /// configuration's own check then names.
    static func duration(_ seconds: Double) -> Duration {
      guard seconds.isFinite, seconds > 0, seconds <= 86_400 else { return .zero }
      return .milliseconds(Int64((seconds * 1000).rounded()))
    }

    func run() throws {
      // Before any thread starts: one arena, so that the service's trims (HeapPolicy) reach
      // every freed block and resident memory stays within --cache-mb and --retain-heap-mb.
      HeapPolicy.limitArenas(1)
      let level = Logger.Level(rawValue: logLevel)!
      LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
      }
      let logger = Logger(label: "evsam.serve")
      let clock = ContinuousClock()
      let start = clock.now
      // The tensors only name the encoder (uploaded embeddings are checked against it); they
      // are dropped before serving.
      let (model, loadedName, encoder) = try {
        let (model, name, tensors) = try modelOptions.loadModelAndTensors()
        return (model, name, EncoderIdentity(model: model, name: name, tensors: tensors))
      }()
      // A --config model is named by its file ("tiny-l"), not its whole path.
      let name =
        modelOptions.config == nil
        ? loadedName : URL(fileURLWithPath: loadedName).deletingPathExtension().lastPathComponent
      logger.info("loaded \(name) in \(formatDuration(clock.now - start))")
      if !LoopbackHTTPConnection.isLoopback(host) {
        logger.warning(
          "binding \(host): the service has no authentication, anyone who can reach it can use it")
      }

      let service = SegmentationService(
        model: model, modelName: name, configuration: serverConfiguration(), encoder: encoder,
        logger: logger)
      let app = SegmentationServer.application(service: service, logger: logger) { port in
        logger.info("serving \(name) on http://\(host):\(port)/ (API description at /openapi.json)")
      }
      // The command line is synchronous; the server runs in a task and this thread waits for it.
      let outcome = Mutex<(any Error)?>(nil)
      let finished = DispatchSemaphore(value: 0)
      Task {
        do {
          try await app.runService()
        } catch {
          outcome.withLock { $0 = error }
        }
        finished.signal()
      }
      finished.wait()
      service.shutdown()
      if let error = outcome.withLock({ $0 }) { throw CLIError("the server failed: \(error)") }
      logger.info("stopped")
    }
  }

  /// `serve` and `loadtest`, registered by `EVSam`.
  var serverCommands: [any ParsableCommand.Type] { [ServeCommand.self, LoadTestCommand.self] }
#else
  import ArgumentParser

  var serverCommands: [any ParsableCommand.Type] { [] }
#endif
