import Foundation

/// The process's resident memory, for `/v1/health` and the load test.
public enum ProcessMemory {
  /// Resident set size in bytes (`VmRSS` of /proc/self/status); 0 where /proc is missing.
  public static func residentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else {
      return 0
    }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
      let fields = line.split(separator: " ", omittingEmptySubsequences: true)
      // "VmRSS:   123456 kB"
      if fields.count >= 2, let kb = Int(fields[1]) { return kb * 1024 }
    }
    return 0
  }
}
