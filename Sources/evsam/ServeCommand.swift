// The server subcommands need EVServer (and with it Hummingbird). Until every build of the
// package links it, these files compile to nothing where the module is absent, and
// `serverCommands` (registered in EVSam.swift) is empty there.
#if canImport(EVServer)
  import ArgumentParser
  import EVServer
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

    @Option(help: "Threads running the model (each also spreads its kernels over the cores).")
    var workers = 2

    @Option(help: "Requests that may wait for a worker; more are refused with 503 and Retry-After.")
    var queue = 32

    @Option(
      help: ArgumentHelp("Time allowed per request, from arrival to answer.", valueName: "seconds"))
    var requestTimeout: Double = 60

    @Option(help: ArgumentHelp("Largest upload.", valueName: "MiB"))
    var maxUploadMb = 32

    @Option(help: "Largest image side, in pixels.")
    var maxImageSide = 8192

    @Option(help: "Largest image area, in pixels.")
    var maxImagePixels = 4096 * 4096

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    func validate() throws {
      guard Logger.Level(rawValue: logLevel) != nil else {
        throw ValidationError(
          "--log-level must be trace, debug, info, notice, warning, error or critical")
      }
      guard requestTimeout > 0, requestTimeout.isFinite else {
        throw ValidationError("--request-timeout must be a positive number of seconds")
      }
      let problems = serverConfiguration().problems()
      guard problems.isEmpty else { throw ValidationError(problems.joined(separator: "; ")) }
    }

    func serverConfiguration() -> ServerConfiguration {
      var c = ServerConfiguration()
      c.host = host
      c.port = port
      c.cacheBytes = cacheMb * 1024 * 1024
      c.workers = workers
      c.queueCapacity = queue
      c.requestTimeout = .milliseconds(Int64((requestTimeout * 1000).rounded()))
      c.maxUploadBytes = maxUploadMb * 1024 * 1024
      c.maxImageSide = maxImageSide
      c.maxImagePixels = maxImagePixels
      return c
    }

    func run() throws {
      let level = Logger.Level(rawValue: logLevel)!
      LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
      }
      let logger = Logger(label: "evsam.serve")
      let clock = ContinuousClock()
      let start = clock.now
      let (model, loadedName) = try modelOptions.loadModel()
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
        model: model, modelName: name, configuration: serverConfiguration(), logger: logger)
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
