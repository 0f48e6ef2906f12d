import Foundation

/// A progress line with rate and ETA for long evaluations. On a terminal it redraws one line;
/// otherwise (logs, CI) it prints a line at most every `logInterval` seconds.
public final class ProgressReporter: @unchecked Sendable {
  public let total: Int
  public let unit: String
  private var done: Int
  private let resumedFrom: Int
  private let write: (String) -> Void
  private let interactive: Bool
  private let logInterval: Double
  private let now: () -> Double
  private let start: Double
  private var lastPrint: Double = -.infinity
  private var lastLength = 0
  private var lastEmitted = -1

  /// - Parameters:
  ///   - alreadyDone: items finished by an earlier, interrupted run (excluded from the rate).
  ///   - now: seconds on any monotonic clock (injectable for tests).
  public init(
    total: Int, unit: String = "images", alreadyDone: Int = 0, interactive: Bool,
    logInterval: Double = 30, now: @escaping () -> Double = ProgressReporter.monotonicSeconds,
    write: @escaping (String) -> Void
  ) {
    self.total = total
    self.unit = unit
    done = alreadyDone
    resumedFrom = alreadyDone
    self.interactive = interactive
    self.logInterval = logInterval
    self.now = now
    self.write = write
    start = now()
  }

  public static func monotonicSeconds() -> Double {
    Double(DispatchTime.now().uptimeNanoseconds) / 1e9
  }

  /// Writes to standard error, redrawing in place when it is a terminal.
  public static func standardError(total: Int, unit: String = "images", alreadyDone: Int = 0)
    -> ProgressReporter
  {
    ProgressReporter(
      total: total, unit: unit, alreadyDone: alreadyDone, interactive: isatty(2) != 0,
      write: { FileHandle.standardError.write(Data($0.utf8)) })
  }

  public func advance(by n: Int = 1, detail: String = "") {
    done += n
    let t = now()
    if interactive || t - lastPrint >= logInterval || done >= total {
      lastPrint = t
      emit(line(at: t, detail: detail), final: false)
    }
  }

  /// Ends the line on a terminal; in a log, prints the final count unless it is already there.
  public func finish(detail: String = "") {
    if !interactive && lastEmitted == done { return }
    emit(line(at: now(), detail: detail), final: true)
  }

  private func emit(_ text: String, final: Bool) {
    lastEmitted = done
    if interactive {
      let padding = String(repeating: " ", count: max(0, lastLength - text.count))
      lastLength = text.count
      write("\r" + text + padding + (final ? "\n" : ""))
    } else {
      write(text + "\n")
    }
  }

  /// `[#######-------------]  123/5000 images  2.41 images/s  ETA 33m42s`
  public func line(at t: Double, detail: String = "") -> String {
    let width = 24
    let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 1
    let filled = Int((fraction * Double(width)).rounded(.down))
    let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
    let elapsed = max(t - start, 0)
    let newlyDone = done - resumedFrom
    var text = "[\(bar)] \(done)/\(total) \(unit)"
    if newlyDone > 0 && elapsed > 0 {
      let rate = Double(newlyDone) / elapsed
      text += "  " + formatFixed(rate, digits: rate < 10 ? 2 : 1) + " \(unit)/s"
      let remaining = Double(max(total - done, 0)) / rate
      text += done >= total ? "  took \(duration(elapsed))" : "  ETA \(duration(remaining))"
    } else if done < total {
      text += "  ETA --"
    }
    if !detail.isEmpty { text += "  " + detail }
    return text
  }

  func duration(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    if s < 60 { return "\(s)s" }
    if s < 3600 { return "\(s / 60)m\(String(format: "%02d", s % 60))s" }
    return "\(s / 3600)h\(String(format: "%02d", (s % 3600) / 60))m"
  }
}
