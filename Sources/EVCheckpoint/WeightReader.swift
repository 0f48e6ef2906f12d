import EVTensor
import Foundation

/// Hands out a model's parameters by checkpoint key while recording every key the model asks
/// for, so that building a model *is* declaring its parameters.
///
/// Layers call `take(_:shape:)` with the key and the shape they need. A missing key or a wrong
/// shape does not stop construction: it is recorded and a zero tensor of the expected shape is
/// returned, so that `finish()` can report every problem of a checkpoint in one error. A reader
/// made with `declaringOnly()` has no weights at all and serves to list the declared keys.
public final class WeightReader {
  public struct Declared: Sendable, Equatable {
    public let key: String
    public let shape: [Int]
    public let dtype: DType
    /// A buffer (BatchNorm statistics, SAM's Gaussian positional matrix) is stored in the
    /// checkpoint but is not a learnable parameter; parameter counts leave it out, as PyTorch's
    /// `parameters()` does.
    public let isBuffer: Bool
  }

  private let source: [String: Tensor]
  private let origin: String
  private let verify: Bool
  public private(set) var declared: [Declared] = []
  private var seen: Set<String> = []

  /// `origin` names the checkpoint in error messages (usually its path).
  public init(_ tensors: [String: Tensor], origin: String) {
    self.source = tensors
    self.origin = origin
    self.verify = true
  }

  /// A reader over the checkpoint at `url` (PyTorch archive or safetensors, by content);
  /// errors name the file.
  public convenience init(contentsOf url: URL) throws(CheckpointError) {
    self.init(try Checkpoint.load(contentsOf: url), origin: url.path)
  }

  private init() {
    self.source = [:]
    self.origin = "(no checkpoint)"
    self.verify = false
  }

  /// A reader with no weights: models built from it have zero parameters and it lists their keys.
  public static func declaringOnly() -> WeightReader { WeightReader() }

  public var root: WeightScope { WeightScope(reader: self, prefix: "") }

  /// True for `declaringOnly()`: its zeros are never run, so layers may skip preparing derived
  /// forms of their weights (Winograd transforms) while the model declares its keys.
  public var isDeclaringOnly: Bool { !verify }

  /// The tensor stored under `key`, widened to float32. `dtype` is what the official model
  /// stores (BatchNorm's `num_batches_tracked` is an int64 scalar); a checkpoint may store
  /// floating-point parameters at another precision (float16), which is accepted.
  public func take(_ key: String, shape: [Int], buffer: Bool = false, dtype: DType = .float32)
    -> Tensor
  {
    precondition(!seen.contains(key), "model declares \(key) twice")
    seen.insert(key)
    declared.append(Declared(key: key, shape: shape, dtype: dtype, isBuffer: buffer))
    guard verify else { return Tensor(shape: shape, storage: sharedZeros(shape.reduce(1, *))) }
    guard let t = source[key], t.shape == shape else { return Tensor(zeros: shape) }
    return t
  }

  /// A declaring-only reader's zeros, one array per element count: a model's repeated blocks
  /// share them (copy-on-write), so declaring ViT-H touches tens of megabytes, not 2.5 GB that
  /// would then stay in the heap beside the weights a load decodes next.
  private var zeros: [Int: [Float]] = [:]

  private func sharedZeros(_ count: Int) -> [Float] {
    if let cached = zeros[count] { return cached }
    let array = [Float](repeating: 0, count: count)
    zeros[count] = array
    return array
  }

  /// Throws one error listing every missing key, unexpected key and shape mismatch.
  public func finish() throws(CheckpointError) {
    guard verify else { return }
    let problems = LoadProblem.comparing(
      declared: declared.map { ($0.key, $0.shape) }, found: source.mapValues(\.shape))
    if !problems.isEmpty {
      throw CheckpointError.verificationFailed(file: origin, problems: problems)
    }
  }

  /// Learnable parameters, counted as PyTorch's `parameters()` (and `manifests/summary.json`) do.
  public func parameterCount(prefix: String = "") -> Int {
    declared.filter { !$0.isBuffer && $0.key.hasPrefix(prefix) }.reduce(0) {
      $0 + $1.shape.reduce(1, *)
    }
  }
}

/// A key prefix inside a `WeightReader`: `scope["stages"][0]["conv"].take("weight", …)`.
public struct WeightScope {
  public let reader: WeightReader
  public let prefix: String

  public subscript(_ name: String) -> WeightScope {
    WeightScope(reader: reader, prefix: prefix.isEmpty ? name : prefix + "." + name)
  }

  public subscript(_ index: Int) -> WeightScope { self[String(index)] }

  public func take(_ name: String, shape: [Int], buffer: Bool = false, dtype: DType = .float32)
    -> Tensor
  {
    reader.take(
      prefix.isEmpty ? name : prefix + "." + name, shape: shape, buffer: buffer, dtype: dtype)
  }
}

public enum LoadProblem: Sendable, Equatable, CustomStringConvertible {
  case missing(key: String, expected: [Int])
  case unexpected(key: String, found: [Int])
  case shapeMismatch(key: String, expected: [Int], found: [Int])

  /// Every difference between what a model declares and what a checkpoint holds: missing keys,
  /// then shape mismatches (both in declaration order), then unexpected keys sorted. The one
  /// comparison behind both `WeightReader.finish()` and the check a load makes before it
  /// decodes anything, so both report the same problems in the same order.
  static func comparing(declared: [(key: String, shape: [Int])], found: [String: [Int]])
    -> [LoadProblem]
  {
    var problems: [LoadProblem] = []
    var mismatched: [LoadProblem] = []
    var declaredKeys: Set<String> = []
    declaredKeys.reserveCapacity(declared.count)
    for (key, shape) in declared {
      declaredKeys.insert(key)
      if let foundShape = found[key] {
        if foundShape != shape {
          mismatched.append(.shapeMismatch(key: key, expected: shape, found: foundShape))
        }
      } else {
        problems.append(.missing(key: key, expected: shape))
      }
    }
    problems += mismatched
    for key in found.keys.filter({ !declaredKeys.contains($0) }).sorted() {
      problems.append(.unexpected(key: key, found: found[key] ?? []))
    }
    return problems
  }

  public var description: String {
    switch self {
    case .missing(let key, let expected):
      return "missing key \(key) (expected shape \(formatShape(expected)))"
    case .unexpected(let key, let found):
      return "unexpected key \(key) (shape \(formatShape(found)))"
    case .shapeMismatch(let key, let expected, let found):
      return
        "shape mismatch for \(key): expected \(formatShape(expected)), found \(formatShape(found))"
    }
  }
}
