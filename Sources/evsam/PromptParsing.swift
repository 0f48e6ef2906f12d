import ArgumentParser
import EVImage
import Foundation

/// Splits "a,b,c" into numbers; nil when any part is not a number.
private func numbers(_ argument: String) -> [Double]? {
  let parts = argument.split(separator: ",", omittingEmptySubsequences: false)
  let values = parts.compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
  return values.count == parts.count ? values : nil
}

/// `--point X,Y[,LABEL]`: a click in original-image pixels; label 1 (foreground, the default)
/// or 0 (background). Other labels parse here and are refused by the predictor, which says why.
struct PointArgument: ExpressibleByArgument, Sendable {
  let point: Point
  let label: Int

  init?(argument: String) {
    guard let v = numbers(argument), v.count == 2 || v.count == 3 else { return nil }
    point = Point(x: v[0], y: v[1])
    if v.count == 3 {
      guard let l = Int(exactly: v[2]) else { return nil }
      label = l
    } else {
      label = 1
    }
  }

  static var defaultValueDescription: String { "X,Y[,LABEL]" }
}

/// `--box X0,Y0,X1,Y1` in original-image pixels.
struct BoxArgument: ExpressibleByArgument, Sendable {
  let box: Box

  init?(argument: String) {
    guard let v = numbers(argument), v.count == 4 else { return nil }
    box = Box(x0: v[0], y0: v[1], x1: v[2], y1: v[3])
  }

  static var defaultValueDescription: String { "X0,Y0,X1,Y1" }
}
