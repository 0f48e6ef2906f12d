import EVExport
import EVMask
import Foundation
import Hummingbird
import NIOCore
import Synchronization

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif
#if canImport(FoundationXML)
  import FoundationXML
#endif

/// Where a Label Studio ML backend finds the images of tasks.
public struct LabelStudioSettings: Sendable, Equatable {
  /// Label Studio's address (`LABEL_STUDIO_URL`): uploaded files, local files it serves and
  /// cloud storage links are fetched from it.
  public var url: URL?
  /// An access token (legacy) or a personal access token (`LABEL_STUDIO_API_KEY`).
  public var apiKey: String?
  /// The folder Label Studio serves local files from (`LOCAL_FILES_DOCUMENT_ROOT`): such files
  /// are read from disk when it is on this machine.
  public var localFilesRoot: URL?
  /// HTTP Basic credentials the backend's routes then require (`BASIC_AUTH_USER`,
  /// `BASIC_AUTH_PASS`), as Label Studio's "basic auth" model setting sends them.
  public var basicAuth: BasicAuth?

  public struct BasicAuth: Sendable, Equatable {
    public var user: String
    public var password: String

    public init(user: String, password: String) {
      self.user = user
      self.password = password
    }
  }

  public init(
    url: URL? = nil, apiKey: String? = nil, localFilesRoot: URL? = nil, basicAuth: BasicAuth? = nil
  ) {
    self.url = url
    self.apiKey = apiKey
    self.localFilesRoot = localFilesRoot
    self.basicAuth = basicAuth
  }
}

/// Label Studio's ML backend protocol (`/health`, `/setup`, `/predict`, `/webhook`) for
/// interactive segmentation: the keypoints and rectangles a user places with smart tools come
/// in a task's context, and the best mask comes back as a brush region. Each task's image is
/// encoded once and cached like an upload, so every further click costs one decode.
public final class LabelStudioBackend: Sendable {
  let service: SegmentationService
  let settings: LabelStudioSettings
  /// Image URL → cached image id.
  private let images = Mutex<[String: String]>([:])
  private let tokens = Mutex<String?>(nil)

  public init(service: SegmentationService, settings: LabelStudioSettings) {
    self.service = service
    self.settings = settings
  }

  /// `GET /health`.
  func health() -> [String: Any] { ["status": "UP", "model_class": "EfficientViTSAM"] }

  /// `POST /setup`: the model version Label Studio shows beside its predictions.
  func setup(_ body: [String: Any]) -> [String: Any] { ["model_version": service.modelName] }

  /// `POST /predict`: one prediction for the first task, from the prompts in `params.context`;
  /// no context (a pre-annotation request), no prediction.
  func predict(_ body: [String: Any], deadline: ContinuousClock.Instant) async throws
    -> [String: Any]
  {
    let context = (body["params"] as? [String: Any])?["context"] as? [String: Any]
    guard let items = context?["result"] as? [[String: Any]], !items.isEmpty else {
      return ["results": [Any]()]
    }
    guard let task = (body["tasks"] as? [[String: Any]])?.first,
      let data = task["data"] as? [String: Any]
    else { throw APIError.invalidRequest("predict: no tasks") }
    let config = try LabelConfig(xml: body["label_config"] as? String ?? "")
    guard let imageURL = data[config.dataKey] as? String else {
      throw APIError.invalidRequest("the task has no \(config.dataKey) (the Image tag's value)")
    }
    let prompt = try Prompt(items)
    let id = try await cachedImage(imageURL, taskID: task["id"] as? Int, deadline: deadline)
    let request = SegmentRequest(
      points: prompt.points.isEmpty ? nil : prompt.points,
      labels: prompt.points.isEmpty ? nil : prompt.labels, box: prompt.box, multimask: true)
    let answer = try await service.segment(imageID: id, request, deadline: deadline)
    let candidates = answer.prompts[0]
    let best = candidates.masks[candidates.best]
    let region: [String: Any] = [
      "id": String(UUID().uuidString.prefix(8)).lowercased(), "from_name": config.fromName,
      "to_name": config.toName, "original_width": answer.width,
      "original_height": answer.height, "image_rotation": 0, "type": "brushlabels",
      "readonly": false, "score": best.score,
      "value": [
        "format": "rle",
        "rle": LabelStudioBrush.encode(rowMajor: best.segmentation.decodeRowMajor()).map(Int.init),
        "brushlabels": prompt.label.map { [$0] } ?? [],
      ] as [String: Any],
    ]
    return [
      "results": [["result": [region], "score": best.score, "model_version": service.modelName]]
    ]
  }

  /// The cached id of the image at `url`: fetched and encoded on first use, and again after
  /// the cache let it go.
  private func cachedImage(_ url: String, taskID: Int?, deadline: ContinuousClock.Instant)
    async throws -> String
  {
    if let id = images.withLock({ $0[url] }), (try? service.image(id)) != nil { return id }
    let bytes = try await fetch(url, taskID: taskID)
    let image = try await service.addImage(bytes, deadline: deadline)
    images.withLock { $0[url] = image.id }
    return image.id
  }

  // MARK: Fetching images

  /// The bytes of a task's image, wherever Label Studio keeps it.
  func fetch(_ url: String, taskID: Int?) async throws -> [UInt8] {
    if url.hasPrefix("http://") || url.hasPrefix("https://") {
      return try await get(URL(string: url), authorized: sameHost(url))
    }
    if url.hasPrefix("s3://") || url.hasPrefix("gs://") || url.hasPrefix("azure-blob://") {
      guard let taskID else { throw unreachable(url, "a cloud storage link needs the task id") }
      let encoded = Data(url.utf8).base64EncodedString()
        .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
      return try await get(
        labelStudio("/tasks/\(taskID)/presign/?fileuri=\(encoded)", for: url), authorized: true)
    }
    let path =
      url.hasPrefix("upload/") ? "/data/" + url : (url.hasPrefix("/upload/") ? "/data" + url : url)
    if let local = localFile(path) {
      do {
        return [UInt8](try Data(contentsOf: local))
      } catch {
        throw unreachable(url, "cannot read \(local.path)")
      }
    }
    guard path.hasPrefix("/") else { throw unreachable(url, "not a URL Label Studio serves") }
    return try await get(labelStudio(path, for: url), authorized: true)
  }

  /// A local-files URL (`/data/local-files/?d=PATH`) as a file under the configured root.
  func localFile(_ path: String) -> URL? {
    guard let root = settings.localFilesRoot, path.contains("local-files"),
      let query = URLComponents(string: path)?.queryItems,
      let relative = query.first(where: { $0.name == "d" })?.value
    else { return nil }
    let file = root.appendingPathComponent(relative).standardizedFileURL
    // Never outside the root (`d=../../etc/passwd`).
    guard file.path.hasPrefix(root.standardizedFileURL.path + "/") else { return nil }
    return FileManager.default.fileExists(atPath: file.path) ? file : nil
  }

  private func labelStudio(_ path: String, for original: String) throws -> URL {
    guard let base = settings.url else {
      throw unreachable(
        original, "set --label-studio-url (or LABEL_STUDIO_URL) to fetch Label Studio's files")
    }
    guard let url = URL(string: base.absoluteString.trimmingSuffix("/") + path) else {
      throw unreachable(original, "not a URL")
    }
    return url
  }

  private func sameHost(_ url: String) -> Bool {
    guard let host = settings.url?.host, let other = URL(string: url)?.host else { return false }
    return host == other
  }

  private func unreachable(_ url: String, _ why: String) -> APIError {
    APIError(.badRequest, code: "image_unreachable", "cannot fetch the task's image \(url): \(why)")
  }

  private func get(_ url: URL?, authorized: Bool) async throws -> [UInt8] {
    guard let url else { throw unreachable("?", "not a URL") }
    var (data, status) = try await get(url, authorized: authorized)
    // An access token from a personal access token expires: get a fresh one, once.
    if status == 401, authorized, tokens.withLock({ $0 }) != nil {
      tokens.withLock { $0 = nil }
      (data, status) = try await get(url, authorized: authorized)
    }
    guard (200..<300).contains(status) else {
      throw unreachable(url.absoluteString, "Label Studio answered \(status)")
    }
    return [UInt8](data)
  }

  private func get(_ url: URL, authorized: Bool) async throws -> (Data, Int) {
    var request = URLRequest(url: url)
    if authorized, let header = try await authorization() {
      request.setValue(header, forHTTPHeaderField: "Authorization")
    }
    let (data, response) = try await URLSession.shared.data(for: request)
    return (data, (response as? HTTPURLResponse)?.statusCode ?? 0)
  }

  /// Whether `header` (an `Authorization` value) carries the configured Basic credentials;
  /// true when none are configured. Compared in time independent of where they differ.
  func admits(_ header: String?) -> Bool {
    guard let auth = settings.basicAuth else { return true }
    let expected = Array(
      ("Basic " + Data("\(auth.user):\(auth.password)".utf8).base64EncodedString()).utf8)
    let given = Array((header ?? "").utf8)
    var difference = UInt8(expected.count == given.count ? 0 : 1)
    for i in 0..<expected.count { difference |= expected[i] ^ (i < given.count ? given[i] : 0) }
    return difference == 0
  }

  /// `Token <key>` for a legacy token; a personal access token (a JWT refresh token) is
  /// exchanged for a short-lived access token first (`POST /api/token/refresh/`), as the SDK
  /// does, and sent as `Bearer`.
  private func authorization() async throws -> String? {
    guard let key = settings.apiKey, !key.isEmpty else { return nil }
    guard key.split(separator: ".").count == 3 else { return "Token \(key)" }
    if let access = tokens.withLock({ $0 }) { return "Bearer \(access)" }
    var request = URLRequest(url: try labelStudio("/api/token/refresh/", for: "the token"))
    request.httpMethod = "POST"
    request.setValue("application/json", forHTTPHeaderField: "Content-Type")
    request.httpBody = try JSONSerialization.data(withJSONObject: ["refresh": key])
    let (data, _) = try await URLSession.shared.data(for: request)
    guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
      let access = object["access"] as? String
    else {
      throw APIError(
        .badGateway, code: "label_studio_token",
        "Label Studio refused the personal access token (LABEL_STUDIO_API_KEY)")
    }
    tokens.withLock { $0 = access }
    return "Bearer \(access)"
  }
}

extension String {
  fileprivate func trimmingSuffix(_ suffix: String) -> String {
    hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
  }
}

/// What a label config says about where masks go: the first BrushLabels control, the Image
/// it labels, and the task-data key of that image (its `value` without the `$`), as
/// label-studio-sdk's `get_first_tag_occurence("BrushLabels", "Image")` finds them.
struct LabelConfig {
  var fromName: String
  var toName: String
  var dataKey: String

  init(xml: String) throws {
    let tags = TagCollector.tags(in: xml)
    let objects = Dictionary(
      tags.filter {
        $0.name == "image" && $0.attributes["name"] != nil && $0.attributes["value"] != nil
      }
      .map { ($0.attributes["name"]!, $0.attributes["value"]!) }, uniquingKeysWith: { a, _ in a })
    for tag in tags where tag.name == "brushlabels" {
      guard let name = tag.attributes["name"], let targets = tag.attributes["toName"] else {
        continue
      }
      for target in targets.split(separator: ",").map(String.init) {
        if let value = objects[target] {
          fromName = name
          toName = target
          dataKey = value.hasPrefix("$") ? String(value.dropFirst()) : value
          return
        }
      }
    }
    throw APIError(
      .unprocessableContent, code: "invalid_label_config",
      "the label config has no BrushLabels tag labelling an Image: add <BrushLabels name=… toName=…> for the masks"
    )
  }
}

/// The elements of an XML document in order: lower-cased tag name and attributes.
private final class TagCollector: NSObject, XMLParserDelegate {
  var tags: [(name: String, attributes: [String: String])] = []

  static func tags(in xml: String) -> [(name: String, attributes: [String: String])] {
    let parser = XMLParser(data: Data(xml.utf8))
    let collector = TagCollector()
    parser.delegate = collector
    _ = parser.parse()
    return collector.tags
  }

  func parser(
    _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
    qualifiedName qName: String?, attributes attributeDict: [String: String] = [:]
  ) {
    tags.append((elementName.lowercased(), attributeDict))
  }
}

/// The prompts of an interactive request: keypoints (positive unless `is_positive` is false)
/// and the last rectangle, in image pixels (Label Studio sends percentages of the natural
/// size), and the label of the last region, which the mask gets.
private struct Prompt {
  var points: [[Double]] = []
  var labels: [Int] = []
  var box: [Double]?
  var label: String?

  init(_ items: [[String: Any]]) throws {
    for item in items {
      guard let type = item["type"] as? String, let value = item["value"] as? [String: Any],
        let width = (item["original_width"] as? NSNumber)?.doubleValue,
        let height = (item["original_height"] as? NSNumber)?.doubleValue,
        let x = (value["x"] as? NSNumber)?.doubleValue,
        let y = (value["y"] as? NSNumber)?.doubleValue
      else {
        throw APIError.invalidRequest("a context region lacks type, value.x/y or original size")
      }
      let px = x * width / 100
      let py = y * height / 100
      switch type {
      case "keypointlabels":
        points.append([px, py])
        labels.append((item["is_positive"] as? Bool) == false ? 0 : 1)
      case "rectanglelabels":
        let w = (value["width"] as? NSNumber)?.doubleValue ?? 0
        let h = (value["height"] as? NSNumber)?.doubleValue ?? 0
        box = [px, py, px + w * width / 100, py + h * height / 100]
      default:
        continue
      }
      if let names = value[type] as? [String], let first = names.first { label = first }
    }
    guard !points.isEmpty || box != nil else {
      throw APIError.invalidPrompt(
        "the context holds no keypointlabels or rectanglelabels region to segment from")
    }
  }
}

/// Label Studio's routes behind HTTP Basic auth when credentials are configured (401 with a
/// `WWW-Authenticate` challenge otherwise, as label-studio-ml-backend answers).
struct BasicAuthMiddleware: RouterMiddleware {
  typealias Context = ServiceRequestContext
  let backend: LabelStudioBackend

  func handle(
    _ request: Request, context: Context, next: (Request, Context) async throws -> Response
  ) async throws -> Response {
    guard backend.admits(request.headers[.authorization]) else {
      return Response(
        status: .unauthorized, headers: [.wwwAuthenticate: #"Basic realm="Login required""#],
        body: .init(byteBuffer: ByteBuffer(string: "Unauthorized")))
    }
    return try await next(request, context)
  }
}
