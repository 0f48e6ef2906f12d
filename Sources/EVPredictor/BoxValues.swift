import EVImage

extension Box {
  /// A box from SAM's `[x0, y0, x1, y1]`, the form the HTTP API and JSON files give it in;
  /// `index` names it in the error.
  public init(values: [Double], index: Int = 0) throws(PredictorError) {
    guard values.count == 4 else { throw .boxValueCount(index: index, count: values.count) }
    self.init(x0: values[0], y0: values[1], x1: values[2], y1: values[3])
  }
}
