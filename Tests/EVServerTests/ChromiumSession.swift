import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Headless Chromium driven over the DevTools protocol through `--remote-debugging-pipe`
/// (JSON messages ending in NUL on file descriptors 3 and 4): no WebSocket client needed.
final class ChromiumSession {
  struct Failure: Error, CustomStringConvertible {
    let description: String
  }

  /// The browser to use: $EVSAM_CHROMIUM, else the first of chromium, chromium-browser,
  /// google-chrome on PATH.
  static var executable: String? {
    if let path = ProcessInfo.processInfo.environment["EVSAM_CHROMIUM"] { return path }
    let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(
      separator: ":")
    for name in ["chromium", "chromium-browser", "google-chrome"] {
      for directory in directories {
        let path = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
      }
    }
    return nil
  }

  private let pid: pid_t
  private let toBrowser: Int32
  private let fromBrowser: Int32
  private let profile: URL
  private var buffer: [UInt8] = []
  private var nextID = 1
  /// The page target's session, once attached.
  private var sessionID: String?

  init(width: Int = 1280, height: Int = 900) throws {
    guard let executable = Self.executable else {
      throw Failure(
        description:
          "Chromium not found: install Debian's chromium package (apt-get install chromium)")
    }
    profile = FileManager.default.temporaryDirectory.appendingPathComponent(
      "evsam-chromium-\(getpid())-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: profile, withIntermediateDirectories: true)
    var commands: [Int32] = [0, 0]
    var events: [Int32] = [0, 0]
    guard pipe(&commands) == 0, pipe(&events) == 0 else {
      throw Failure(description: "pipe(): \(String(cString: strerror(errno)))")
    }
    // Move the child's ends above 4, so that placing them on 3 and 4 cannot clobber each other.
    let childIn = fcntl(commands[0], F_DUPFD, 10)
    let childOut = fcntl(events[1], F_DUPFD, 10)
    close(commands[0])
    close(events[1])
    toBrowser = commands[1]
    fromBrowser = events[0]
    _ = fcntl(toBrowser, F_SETFD, FD_CLOEXEC)
    _ = fcntl(fromBrowser, F_SETFD, FD_CLOEXEC)

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, childIn, 3)
    posix_spawn_file_actions_adddup2(&actions, childOut, 4)
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    let arguments = [
      executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
      "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
      "--disable-extensions", "--disable-background-networking", "--mute-audio",
      "--hide-scrollbars",
      "--user-data-dir=\(profile.path)", "--window-size=\(width),\(height)", "about:blank",
    ]
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var child: pid_t = 0
    let status = posix_spawn(&child, executable, &actions, nil, &argv, environ)
    close(childIn)
    close(childOut)
    guard status == 0 else {
      close(toBrowser)
      close(fromBrowser)
      throw Failure(description: "cannot start \(executable): \(String(cString: strerror(status)))")
    }
    pid = child
  }

  deinit {
    close(toBrowser)
    close(fromBrowser)
    kill(pid, SIGKILL)
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    try? FileManager.default.removeItem(at: profile)
  }

  /// Asks the browser to quit and waits for it (a few seconds at most).
  func quit() {
    _ = try? send("Browser.close", [:], session: false, timeout: 5)
    for _ in 0..<50 {
      var status: Int32 = 0
      if waitpid(pid, &status, WNOHANG) == pid { return }
      usleep(100_000)
    }
  }

  /// Opens `url` in a new page and attaches to it; later calls go to that page.
  func open(_ url: String) throws {
    let target = try send("Target.createTarget", ["url": url], session: false)
    guard let targetID = target["targetId"] as? String else {
      throw Failure(description: "no target id")
    }
    let attached = try send(
      "Target.attachToTarget", ["targetId": targetID, "flatten": true], session: false)
    sessionID = attached["sessionId"] as? String
    guard sessionID != nil else { throw Failure(description: "could not attach to the page") }
    for domain in ["Page.enable", "Runtime.enable", "DOM.enable"] { _ = try send(domain) }
  }

  /// Evaluates a JavaScript expression in the page and returns its JSON value.
  func evaluate(_ expression: String) throws -> Any? {
    let result = try send(
      "Runtime.evaluate", ["expression": expression, "returnByValue": true, "awaitPromise": true])
    if let exception = result["exceptionDetails"] {
      throw Failure(description: "JavaScript error in \(expression): \(exception)")
    }
    return (result["result"] as? [String: Any])?["value"]
  }

  /// Polls `expression` until it is true.
  func waitUntil(_ expression: String, seconds: Double = 60) throws {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
      if try evaluate(expression) as? Bool == true { return }
      usleep(50_000)
    }
    let status = (try? evaluate("document.getElementById('status')?.textContent")) as? String
    throw Failure(
      description: "timed out waiting for \(expression) (page status: \(status ?? "?"))")
  }

  /// Puts a file into an `<input type=file>`, as a person choosing it would.
  func setFile(selector: String, path: String) throws {
    try setFiles(selector: selector, paths: [path])
  }

  /// Chooses several files in a file input, as a multiple selection does.
  func setFiles(selector: String, paths: [String]) throws {
    let document = try send("DOM.getDocument", [:])
    guard let root = (document["root"] as? [String: Any])?["nodeId"] as? Int else {
      throw Failure(description: "no document")
    }
    let node = try send("DOM.querySelector", ["nodeId": root, "selector": selector])
    guard let nodeID = node["nodeId"] as? Int, nodeID != 0 else {
      throw Failure(description: "no element \(selector)")
    }
    _ = try send("DOM.setFileInputFiles", ["files": paths, "nodeId": nodeID])
  }

  /// Lets the page's downloads land in `folder` (by their own names).
  func allowDownloads(to folder: String) throws {
    _ = try send(
      "Browser.setDownloadBehavior", ["behavior": "allow", "downloadPath": folder], session: false)
  }

  /// A mouse press and release at page coordinates; `to` makes it a drag.
  func mouse(
    at point: (x: Double, y: Double), to end: (x: Double, y: Double)? = nil,
    button: String = "left", modifiers: Int = 0
  ) throws {
    func event(_ type: String, _ p: (x: Double, y: Double), buttons: Int) throws {
      _ = try send(
        "Input.dispatchMouseEvent",
        [
          "type": type, "x": p.x, "y": p.y, "button": button, "buttons": buttons, "clickCount": 1,
          "modifiers": modifiers,
        ])
    }
    let mask = button == "right" ? 2 : 1
    try event("mouseMoved", point, buttons: 0)
    try event("mousePressed", point, buttons: mask)
    if let end {
      for step in 1...8 {
        let t = Double(step) / 8
        try event(
          "mouseMoved", (point.x + (end.x - point.x) * t, point.y + (end.y - point.y) * t),
          buttons: mask)
      }
    }
    try event("mouseReleased", end ?? point, buttons: 0)
  }

  /// Presses and releases Enter on whatever has the focus, as the keyboard would (the key
  /// press carries its text, so a focused button is activated by it).
  func pressEnter() throws {
    for type in ["keyDown", "keyUp"] {
      var event: [String: Any] = [
        "type": type, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13,
        "nativeVirtualKeyCode": 13,
      ]
      if type == "keyDown" { event["text"] = "\r" }
      _ = try send("Input.dispatchKeyEvent", event)
    }
  }

  /// A PNG of the page as shown.
  func screenshot() throws -> Data {
    let shot = try send("Page.captureScreenshot", ["format": "png"])
    guard let base64 = shot["data"] as? String, let data = Data(base64Encoded: base64) else {
      throw Failure(description: "no screenshot data")
    }
    return data
  }

  /// Sends a command and waits for its answer (events on the way are dropped).
  @discardableResult
  func send(
    _ method: String, _ params: [String: Any] = [:], session: Bool = true, timeout: Double = 60
  )
    throws -> [String: Any]
  {
    let id = nextID
    nextID += 1
    var message: [String: Any] = ["id": id, "method": method, "params": params]
    if session, let sessionID { message["sessionId"] = sessionID }
    var bytes = [UInt8](try JSONSerialization.data(withJSONObject: message))
    bytes.append(0)
    var sent = 0
    while sent < bytes.count {
      let n = bytes[sent...].withUnsafeBytes { write(toBrowser, $0.baseAddress, $0.count) }
      guard n > 0 else { throw Failure(description: "the browser's pipe closed (\(method))") }
      sent += n
    }
    let end = Date().addingTimeInterval(timeout)
    while true {
      let reply = try receive(until: end, waitingFor: method)
      guard reply["id"] as? Int == id else { continue }
      if let error = reply["error"] { throw Failure(description: "\(method) failed: \(error)") }
      return reply["result"] as? [String: Any] ?? [:]
    }
  }

  private func receive(until end: Date, waitingFor method: String) throws -> [String: Any] {
    while true {
      if let zero = buffer.firstIndex(of: 0) {
        let message = Array(buffer[..<zero])
        buffer.removeFirst(zero + 1)
        if let object = try? JSONSerialization.jsonObject(with: Data(message)) as? [String: Any] {
          return object
        }
        continue
      }
      let remaining = end.timeIntervalSinceNow
      guard remaining > 0 else {
        throw Failure(description: "no answer from the browser to \(method)")
      }
      var poller = pollfd(fd: fromBrowser, events: Int16(POLLIN), revents: 0)
      let ready = poll(&poller, 1, Int32(min(remaining, 1) * 1000))
      guard ready >= 0 else {
        throw Failure(description: "poll(): \(String(cString: strerror(errno)))")
      }
      if ready == 0 { continue }
      var chunk = [UInt8](repeating: 0, count: 1 << 16)
      let n = chunk.withUnsafeMutableBytes { read(fromBrowser, $0.baseAddress, $0.count) }
      guard n > 0 else {
        throw Failure(description: "the browser closed its pipe (waiting for \(method))")
      }
      buffer += chunk[..<n]
    }
  }
}
