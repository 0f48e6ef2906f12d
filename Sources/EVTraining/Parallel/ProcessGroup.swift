#if canImport(CCollectives)
  import CCollectives
#endif

/// The processes of a data-parallel run (one per rank) and the collectives a step needs.
/// Sums run in rank order, so a run's result does not depend on how the transport reduces.
package protocol ProcessGroup: AnyObject {
  var rank: Int { get }
  var size: Int { get }
  /// Replaces `values` on every rank by their sum over the ranks, v₀ + v₁ + … in rank order.
  func sumInRankOrder(_ values: inout [Float]) throws(ProcessGroupError)
  func sumInRankOrder(_ values: inout [Double]) throws(ProcessGroupError)
  /// Every rank's `value`, in rank order.
  func allGather(_ value: UInt64) throws(ProcessGroupError) -> [UInt64]
}

/// A collective that failed (a peer gone, a transport error), in one line.
package struct ProcessGroupError: Error, CustomStringConvertible {
  package let description: String
  package init(_ description: String) { self.description = description }
}

/// A run of one process: every collective is the identity.
package final class SingleProcess: ProcessGroup {
  package init() {}
  package var rank: Int { 0 }
  package var size: Int { 1 }
  package func sumInRankOrder(_ values: inout [Float]) {}
  package func sumInRankOrder(_ values: inout [Double]) {}
  package func allGather(_ value: UInt64) -> [UInt64] { [value] }
}

/// The ranks of an MPI job (`mpirun -np N evsam train …`, or `srun` with PMI/PMIx), through
/// Open MPI. Joined once per process; a process that an MPI launcher did not start runs alone
/// without touching MPI.
package final class MPIProcessGroup: ProcessGroup {
  package let rank: Int
  package let size: Int

  private init(rank: Int, size: Int) {
    self.rank = rank
    self.size = size
  }

  /// Whether this process was started by an MPI launcher.
  package static var isLaunched: Bool {
    #if canImport(CCollectives)
      return ev_mpi_launched() != 0
    #else
      return false
    #endif
  }

  /// Joins the job this process belongs to: an MPI group when an MPI launcher started it,
  /// otherwise a single process. Throws when MPI is wanted but cannot start.
  package static func join() throws(ProcessGroupError) -> any ProcessGroup {
    guard isLaunched else { return SingleProcess() }
    #if canImport(CCollectives)
      var rank: Int32 = 0
      var size: Int32 = 1
      try call { ev_mpi_init(&rank, &size, $0, $1) }
      return MPIProcessGroup(rank: Int(rank), size: Int(size))
    #else
      throw ProcessGroupError(
        "this process was started by an MPI launcher, but this build of evsam has no MPI "
          + "(data-parallel runs need Linux with Open MPI)")
    #endif
  }

  package func sumInRankOrder(_ values: inout [Float]) throws(ProcessGroupError) {
    #if canImport(CCollectives)
      try Self.sum(&values, ev_mpi_allreduce_ordered_f32)
    #endif
  }

  package func sumInRankOrder(_ values: inout [Double]) throws(ProcessGroupError) {
    #if canImport(CCollectives)
      try Self.sum(&values, ev_mpi_allreduce_ordered_f64)
    #endif
  }

  package func allGather(_ value: UInt64) throws(ProcessGroupError) -> [UInt64] {
    var out = [UInt64](repeating: 0, count: size)
    #if canImport(CCollectives)
      try out.withUnsafeMutableBufferPointer { buffer throws(ProcessGroupError) in
        let base = buffer.baseAddress
        try Self.call { ev_mpi_allgather_u64(value, base, $0, $1) }
      }
    #endif
    return out
  }

  /// Ends every rank of the job with `code` (after a rank's error, so that no peer waits for
  /// it forever).
  package func abort(code: Int32) -> Never {
    #if canImport(CCollectives)
      ev_mpi_abort(code)
    #endif
    fatalError("MPI_Abort returned")
  }

  /// Leaves the job (MPI_Finalize); the last call of a rank that ends normally.
  package func finish() {
    #if canImport(CCollectives)
      ev_mpi_finalize()
    #endif
  }

  #if canImport(CCollectives)
    /// One of the C layer's rank-ordered all-reduces on `values`.
    private static func sum<T>(
      _ values: inout [T],
      _ reduce: (UnsafeMutablePointer<T>?, Int64, UnsafeMutablePointer<CChar>?, Int) -> Int32
    ) throws(ProcessGroupError) {
      try values.withUnsafeMutableBufferPointer { buffer throws(ProcessGroupError) in
        let base = buffer.baseAddress
        let count = Int64(buffer.count)
        try call { reduce(base, count, $0, $1) }
      }
    }

    /// Runs one C call that reports errors as (code, message buffer).
    private static func call(
      _ body: (UnsafeMutablePointer<CChar>, Int) -> Int32
    ) throws(ProcessGroupError) {
      var message = [CChar](repeating: 0, count: 512)
      let code = message.withUnsafeMutableBufferPointer { body($0.baseAddress!, $0.count) }
      if code != 0 {
        throw ProcessGroupError(
          String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
      }
    }
  #endif
}
