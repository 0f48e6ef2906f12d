/// A dense, row-major float32 tensor on the CPU.
///
/// Storage is a Swift array, so copies are copy-on-write and a `Tensor` can be passed
/// between threads freely. Kernels reach the memory through `withUnsafe…` accessors.
public struct Tensor: Sendable, Equatable {
  public private(set) var shape: [Int]
  public var storage: [Float]

  public init(shape: [Int], storage: [Float]) {
    precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
    precondition(
      shape.reduce(1, *) == storage.count,
      "shape \(shape) holds \(shape.reduce(1, *)) elements, storage has \(storage.count)")
    self.shape = shape
    self.storage = storage
  }

  public init(zeros shape: [Int]) {
    self.init(shape: shape, storage: [Float](repeating: 0, count: shape.reduce(1, *)))
  }

  public init(repeating value: Float, shape: [Int]) {
    self.init(shape: shape, storage: [Float](repeating: value, count: shape.reduce(1, *)))
  }

  /// Fills a tensor of `shape` by handing the kernel its uninitialised buffer.
  public init(
    uninitializedShape shape: [Int], _ fill: (UnsafeMutableBufferPointer<Float>) throws -> Void
  ) rethrows {
    let n = shape.reduce(1, *)
    let storage = try [Float](unsafeUninitializedCapacity: n) { buffer, count in
      try fill(buffer)
      count = n
    }
    self.init(shape: shape, storage: storage)
  }

  public var count: Int { storage.count }
  public var rank: Int { shape.count }

  /// Size of dimension `i`; negative `i` counts from the end.
  public func dim(_ i: Int) -> Int { shape[i < 0 ? shape.count + i : i] }

  public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows
    -> R
  {
    try storage.withUnsafeBufferPointer(body)
  }

  public mutating func withUnsafeMutableBufferPointer<R>(
    _ body: (inout UnsafeMutableBufferPointer<Float>) throws -> R
  ) rethrows -> R {
    try storage.withUnsafeMutableBufferPointer(body)
  }

  /// Same elements, new shape; one dimension may be -1.
  public func reshaped(_ newShape: [Int]) -> Tensor {
    var resolved = newShape
    if let i = newShape.firstIndex(of: -1) {
      let known = newShape.enumerated().filter { $0.offset != i }.map(\.element).reduce(1, *)
      precondition(known > 0 && count % known == 0, "cannot reshape \(shape) to \(newShape)")
      resolved[i] = count / known
    }
    precondition(resolved.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
    var t = self
    t.shape = resolved
    return t
  }

  /// Element at a multi-index; for tests and debugging, not for kernels.
  public subscript(_ index: Int...) -> Float {
    get { storage[flatIndex(index)] }
    set { storage[flatIndex(index)] = newValue }
  }

  private func flatIndex(_ index: [Int]) -> Int {
    precondition(index.count == shape.count, "index \(index) for shape \(shape)")
    var flat = 0
    for (i, d) in zip(index, shape) {
      precondition(i >= 0 && i < d, "index \(index) out of range for shape \(shape)")
      flat = flat * d + i
    }
    return flat
  }
}

extension Tensor: CustomStringConvertible {
  public var description: String {
    "Tensor(\(shape.map(String.init).joined(separator: "×")))"
  }
}

/// Shapes print as PyTorch prints them in manifests: `32x3x3x3`, and `scalar` for rank 0.
public func formatShape(_ shape: [Int]) -> String {
  shape.isEmpty ? "scalar" : shape.map(String.init).joined(separator: "x")
}
