import EVTensor
import Foundation

/// Workspaces kept between `decode` calls, so that their buffers (≈ 20 MB, mostly 4096×256
/// image-side matrices) are not allocated and faulted in again for every prompt.
final class DecoderWorkspacePool: @unchecked Sendable {
  private let lock = NSLock()
  private var idle: [DecoderWorkspace] = []

  /// At most this many idle workspaces are kept (more only exist while calls overlap).
  static let retained = 4

  func take() -> DecoderWorkspace {
    lock.lock()
    defer { lock.unlock() }
    return idle.popLast() ?? DecoderWorkspace()
  }

  func give(_ workspace: DecoderWorkspace) {
    lock.lock()
    defer { lock.unlock() }
    if idle.count < Self.retained { idle.append(workspace) }
  }
}

/// Scratch memory for decoding prompts against one image, reused from prompt to prompt.
final class DecoderWorkspace {
  private var scoreBuffer = DecoderBuffer(count: 0)
  private var projections: (DecoderBuffer, DecoderBuffer)?
  private var keys = (DecoderBuffer(count: 0), DecoderBuffer(count: 0))
  private var keysPEBuffer = DecoderBuffer(count: 0)
  private var named: [String: DecoderBuffer] = [:]

  func scores(count: Int) -> UnsafeMutablePointer<Float> {
    if scoreBuffer.count < count { scoreBuffer = DecoderBuffer(count: count) }
    return scoreBuffer.base
  }

  /// The two N×E buffers the transformer's image tokens alternate between.
  func keyBuffers(count: Int) -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) {
    if keys.0.count < count { keys = (DecoderBuffer(count: count), DecoderBuffer(count: count)) }
    return (keys.0.base, keys.1.base)
  }

  /// N×E: image tokens + positional encoding.
  func keysPE(count: Int) -> UnsafeMutablePointer<Float> {
    if keysPEBuffer.count < count { keysPEBuffer = DecoderBuffer(count: count) }
    return keysPEBuffer.base
  }

  /// Any other reusable buffer, by name.
  func buffer(_ name: String, count: Int) -> UnsafeMutablePointer<Float> {
    if let b = named[name], b.count >= count { return b.base }
    let b = DecoderBuffer(count: count)
    named[name] = b
    return b.base
  }

  /// Two N×internalDim buffers for unfolded image projections.
  func imageProjections(internalDim: Int, imageTokens n: Int) -> (
    UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>
  ) {
    if let p = projections, p.0.count >= n * internalDim { return (p.0.base, p.1.base) }
    let p = (DecoderBuffer(count: n * internalDim), DecoderBuffer(count: n * internalDim))
    projections = p
    return (p.0.base, p.1.base)
  }
}
