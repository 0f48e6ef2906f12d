extension Duration {
  /// The duration in seconds, as timings are printed and logged.
  package var seconds: Double {
    Double(components.seconds) + Double(components.attoseconds) * 1e-18
  }
}
