import Dispatch
import Foundation

/// Ctrl-C (SIGINT) during a long run: the first asks the run to stop at the next safe point
/// (after the current step, once its results are saved); a second quits at once, leaving the
/// files of the last save, which are always whole.
final class InterruptFlag: @unchecked Sendable {
  private let lock = NSLock()
  private var count = 0
  private var source: DispatchSourceSignal?
  private let firstNotice: String

  private init(firstNotice: String) { self.firstNotice = firstNotice }

  /// Takes SIGINT over from the default handler (which would end the process at once) until
  /// `uninstall()`; `firstNotice` is printed when the first one arrives.
  static func install(firstNotice: String) -> InterruptFlag {
    let flag = InterruptFlag(firstNotice: firstNotice)
    signal(SIGINT, SIG_IGN)
    let source = DispatchSource.makeSignalSource(
      signal: SIGINT, queue: DispatchQueue(label: "evsam.sigint"))
    source.setEventHandler { flag.raise() }
    source.resume()
    flag.source = source
    return flag
  }

  /// Whether Ctrl-C has been pressed.
  var isRaised: Bool {
    lock.lock()
    defer { lock.unlock() }
    return count > 0
  }

  /// What the signal handler does: the first call raises the flag, the second exits with
  /// status 130 (128 + SIGINT, what shells report for Ctrl-C).
  func raise() {
    lock.lock()
    count += 1
    let n = count
    lock.unlock()
    if n == 1 {
      FileHandle.standardError.write(Data(("\n" + firstNotice + "\n").utf8))
    } else {
      FileHandle.standardError.write(Data("\ninterrupted again: quitting without saving\n".utf8))
      exit(130)
    }
  }

  /// Gives SIGINT back to the default handler.
  func uninstall() {
    source?.cancel()
    source = nil
    signal(SIGINT, SIG_DFL)
  }
}
