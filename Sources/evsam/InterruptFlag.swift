import Dispatch
import Foundation

/// Ctrl-C (SIGINT) during a long run: the first asks the run to stop at the next safe point
/// (after the current step, once its results are saved); a second quits at once, leaving the
/// files of the last save, which are always whole. SIGUSR1 asks for the same stop and never
/// quits at once: it is what `mpirun` forwards to every rank and what Slurm's `--signal`
/// sends before a job's time runs out.
final class InterruptFlag: @unchecked Sendable {
  private let lock = NSLock()
  private var count = 0
  private var sources: [DispatchSourceSignal] = []
  private let firstNotice: String?

  private init(firstNotice: String?) { self.firstNotice = firstNotice }

  /// Takes SIGINT over from the default handler (which would end the process at once) until
  /// `uninstall()`; `firstNotice` is printed when the first one arrives.
  static func install(firstNotice: String?) -> InterruptFlag {
    let flag = InterruptFlag(firstNotice: firstNotice)
    let queue = DispatchQueue(label: "evsam.signals")
    for (number, handler) in [(SIGINT, flag.raise), (SIGUSR1, flag.requestStop)] {
      signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
      source.setEventHandler { handler() }
      source.resume()
      flag.sources.append(source)
    }
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
      if let firstNotice { FileHandle.standardError.write(Data(("\n" + firstNotice + "\n").utf8)) }
    } else {
      FileHandle.standardError.write(Data("\ninterrupted again: quitting without saving\n".utf8))
      exit(130)
    }
  }

  /// SIGUSR1: the stop a first Ctrl-C asks for, however often it comes.
  func requestStop() {
    lock.lock()
    let first = count == 0
    count = max(count, 1)
    lock.unlock()
    if first, let firstNotice {
      FileHandle.standardError.write(Data(("\n" + firstNotice + "\n").utf8))
    }
  }

  /// Gives SIGINT and SIGUSR1 back to their default handlers.
  func uninstall() {
    for source in sources { source.cancel() }
    sources = []
    signal(SIGINT, SIG_DFL)
    signal(SIGUSR1, SIG_DFL)
  }
}
