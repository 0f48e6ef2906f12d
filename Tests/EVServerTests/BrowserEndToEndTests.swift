import EVImage
import EVMask
import EVServer
import Foundation
import HummingbirdTesting
import TestSupport
import Testing

extension ServerTests {
  /// The page as a person uses it: headless Chromium opens it from a running server, a real
  /// file upload of the shipped example, a click, a mask on the canvas. Under CI the test always
  /// runs (CI installs Chromium); elsewhere it needs a Chromium on PATH.
  @Suite struct BrowserEndToEndTests {
    static let enabled =
      ChromiumSession.executable != nil || ProcessInfo.processInfo.environment["CI"] != nil

    /// Where screenshots go: $EVSAM_E2E_OUTPUT, else out/e2e in the project.
    static var outputFolder: URL {
      if let path = ProcessInfo.processInfo.environment["EVSAM_E2E_OUTPUT"] {
        return URL(fileURLWithPath: path)
      }
      return Fixtures.projectRoot.appendingPathComponent("out/e2e")
    }

    @Test(.enabled(if: enabled, "needs Chromium (apt-get install chromium)"))
    func uploadClickAndSeeTheMask() async throws {
      _ = try Fixtures.require()
      let example = TestServer.exampleJPEG.path
      #expect(FileManager.default.fileExists(atPath: example))
      try FileManager.default.createDirectory(
        at: Self.outputFolder, withIntermediateDirectories: true)
      let folder = Self.outputFolder
      let downloads = folder.appendingPathComponent("downloads")
      try? FileManager.default.removeItem(at: downloads)
      try FileManager.default.createDirectory(at: downloads, withIntermediateDirectories: true)
      try await TestServer.withClient(.live) { client, service in
        let port = try #require(client.port)
        // The browser calls block this task's thread on the DevTools pipe; the server's
        // handlers run on the other threads of the pool and its model work on its own workers.
        do {
          let browser = try ChromiumSession()
          defer { browser.quit() }
          try browser.open("http://127.0.0.1:\(port)/")
          try browser.waitUntil(
            "document.readyState === 'complete' && window.evsamTest !== undefined")

          // Choose the shipped example in the file input, as a person would.
          try browser.setFile(selector: "#file", path: example)
          try browser.waitUntil(
            "window.evsamTest.state.imageId !== null && document.body.dataset.status === 'ready'")
          let size =
            try browser.evaluate("[evsamTest.state.width, evsamTest.state.height]") as? [Int]
          let decoded = try RGBImage(contentsOf: URL(fileURLWithPath: example))
          #expect(size == [decoded.width, decoded.height])
          #expect(service.cache.stats.images == 1)

          // Click a point of the image (in image pixels, mapped to the page).
          func pagePoint(_ x: Double, _ y: Double) throws -> (x: Double, y: Double) {
            let rect = try #require(
              try browser.evaluate(
                "(() => { const r = document.getElementById('view').getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()"
              ) as? [Double])
            return (
              rect[0] + x * rect[2] / Double(decoded.width),
              rect[1] + y * rect[3] / Double(decoded.height)
            )
          }
          let overlayBefore = try browser.evaluate("evsamTest.overlayPixels()") as? Int
          #expect(overlayBefore == 0)
          try browser.mouse(at: try pagePoint(300, 200))
          try browser.waitUntil(
            "evsamTest.state.result !== null && document.body.dataset.status === 'ready'")

          let maskPixels = try #require(try browser.evaluate("evsamTest.maskPixels()") as? Int)
          let candidates =
            try browser.evaluate("evsamTest.state.result.masks.map(m => m.area)") as? [Int]
          let chosen = try browser.evaluate("evsamTest.state.candidate") as? Int
          let best = try browser.evaluate("evsamTest.state.result.best") as? Int
          #expect(candidates?.count == 3 && chosen == best)
          #expect(maskPixels > 0 && maskPixels == candidates?[chosen ?? 0])
          #expect(
            try browser.evaluate("document.body.dataset.maskPixels") as? String
              == String(maskPixels))
          // The mask is really on the canvas: pixels differ from the bare image.
          let overlay = try #require(try browser.evaluate("evsamTest.overlayPixels()") as? Int)
          #expect(overlay >= maskPixels / 2, "overlay \(overlay) px for a mask of \(maskPixels) px")
          let points =
            try browser.evaluate("evsamTest.state.points.map(p => [p.x, p.y, p.label])")
            as? [[Double]]
          #expect(points?.count == 1 && points?[0][2] == 1)
          if let p = points?.first {
            #expect(abs(p[0] - 300) < 2 && abs(p[1] - 200) < 2)
          }
          try browser.screenshot().write(to: folder.appendingPathComponent("page-after-click.png"))

          // Another candidate, from its button.
          let other = (best ?? 0) == 0 ? 1 : 0
          _ = try browser.evaluate(
            "document.querySelectorAll('#candidates button')[\(other)].click()")
          #expect(try browser.evaluate("evsamTest.state.candidate") as? Int == other)
          #expect(try browser.evaluate("evsamTest.maskPixels()") as? Int == candidates?[other])

          // A right click adds a background point and refines the mask.
          try browser.mouse(at: try pagePoint(100, 300), button: "right")
          try browser.waitUntil(
            "evsamTest.state.points.length === 2 && evsamTest.state.result.masks.length === 1 && document.body.dataset.status === 'ready'"
          )
          #expect(try browser.evaluate("evsamTest.state.points[1].label") as? Int == 0)

          // Undo takes the background point back; Clear removes the prompts and the mask.
          _ = try browser.evaluate("document.getElementById('undo').click()")
          try browser.waitUntil(
            "evsamTest.state.points.length === 1 && evsamTest.state.result.masks.length === 3 && document.body.dataset.status === 'ready'"
          )
          _ = try browser.evaluate("document.getElementById('clear').click()")
          try browser.waitUntil(
            "evsamTest.state.points.length === 0 && evsamTest.maskPixels() === 0 && evsamTest.overlayPixels() === 0"
          )

          // A drag draws a box; the downloads hold its mask; Keep makes it an annotation.
          try browser.mouse(at: try pagePoint(150, 80), to: try pagePoint(450, 330))
          try browser.waitUntil(
            "evsamTest.state.box !== null && document.body.dataset.status === 'ready'")
          let box = try #require(try browser.evaluate("evsamTest.state.box") as? [Double])
          #expect(
            abs(box[0] - 150) < 3 && abs(box[1] - 80) < 3 && abs(box[2] - 450) < 3
              && abs(box[3] - 330) < 3)
          let boxMaskPixels = try #require(try browser.evaluate("evsamTest.maskPixels()") as? Int)
          try browser.allowDownloads(to: downloads.path)
          _ = try browser.evaluate("document.getElementById('download-png').click()")
          _ = try browser.evaluate("document.getElementById('download-coco').click()")
          let maskFile = downloads.appendingPathComponent("coffee_mask.png")
          let cocoFile = downloads.appendingPathComponent("coffee_coco.json")
          try Self.waitForFiles([maskFile, cocoFile])
          let mask = try RGBImage(contentsOf: maskFile)
          #expect(mask.width == decoded.width && mask.height == decoded.height)
          let white = stride(from: 0, to: mask.pixels.count, by: 3).filter {
            mask.pixels[$0] == 255
          }
          #expect(white.count == boxMaskPixels)
          let coco = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: cocoFile)) as? [String: Any])
          let annotations = try #require(coco["annotations"] as? [[String: Any]])
          #expect(annotations.count == 1 && annotations.first?["area"] as? Int == boxMaskPixels)
          #expect(
            (coco["images"] as? [[String: Any]])?.first?["file_name"] as? String == "coffee.jpg")
          // pycocotools loads the download and decodes its mask to the same pixels.
          let script = """
            import contextlib, json, sys
            from pycocotools.coco import COCO
            with contextlib.redirect_stdout(sys.stderr):  # COCO() reports its loading on stdout
                coco = COCO(sys.argv[1])
            print(json.dumps([int(coco.annToMask(a).sum()) for a in coco.loadAnns(coco.getAnnIds())]))
            """
          let areas = try JSONDecoder().decode(
            [Int].self, from: PythonTools.run(script, arguments: [cocoFile.path]))
          #expect(areas == [boxMaskPixels])
          _ = try browser.evaluate("document.getElementById('keep').click()")
          #expect(try browser.evaluate("evsamTest.state.annotations.length") as? Int == 1)

          // "Segment everything" adds the generator's masks to the kept one.
          _ = try browser.evaluate(
            "document.getElementById('pps').value = '4'; document.getElementById('iou-thresh').value = '0'; document.getElementById('stability-thresh').value = '0'; document.getElementById('everything').click()"
          )
          try browser.waitUntil(
            "evsamTest.state.annotations.length > 1 && document.body.dataset.status === 'ready'")
          try browser.screenshot().write(to: folder.appendingPathComponent("page-everything.png"))

          try Self.checkAnnotationsSurvive(browser, pagePoint: pagePoint, folder: downloads)
          try Self.checkClassesAndUndoingAKeep(browser, pagePoint: pagePoint)
          try Self.checkZoomAndSeveralImages(browser, pagePoint: pagePoint)
        }
        // The screenshots are real PNGs of the page.
        for name in ["page-after-click.png", "page-everything.png"] {
          let shot = try RGBImage(contentsOf: folder.appendingPathComponent(name))
          #expect(shot.width >= 800 && shot.height >= 600, "\(name)")
        }
      }
    }

    /// The page's COCO download, as far as these tests read it.
    struct COCOExport: Decodable {
      struct Image: Decodable {
        var id: Int
        var fileName: String

        enum CodingKeys: String, CodingKey {
          case id
          case fileName = "file_name"
        }
      }
      struct Annotation: Decodable {
        var imageID: Int
        var categoryID: Int
        var segmentation: RLE
        var bbox: [Double]

        enum CodingKeys: String, CodingKey {
          case segmentation, bbox
          case imageID = "image_id"
          case categoryID = "category_id"
        }
      }
      struct Category: Decodable {
        var id: Int
        var name: String
      }
      var images: [Image]
      var annotations: [Annotation]
      var categories: [Category]
    }

    static func coco(_ browser: ChromiumSession) throws -> COCOExport {
      let json = try #require(
        try browser.evaluate("JSON.stringify(evsamTest.coco())") as? String)
      return try JSONDecoder().decode(COCOExport.self, from: Data(json.utf8))
    }

    /// Regressions of the page's annotation keeping: every exported bbox is COCO's (the
    /// everything route answers SAM's boxes), Enter on a focused button does not also keep the
    /// mask, a file the browser cannot decode changes nothing, and opening another image keeps
    /// the first one's annotations for the download and for when it is opened again.
    static func checkAnnotationsSurvive(
      _ browser: ChromiumSession, pagePoint: (Double, Double) throws -> (x: Double, y: Double),
      folder: URL
    ) throws {
      let first = try coco(browser)
      #expect(first.annotations.count > 1)
      for a in first.annotations {
        #expect(a.bbox == a.segmentation.boundingBox.array, "\(a.bbox)")
      }

      // A mask on screen, the focus on "Segment everything", Enter: the button runs once and
      // the mask is not kept.
      let kept = try #require(try browser.evaluate("evsamTest.state.annotations.length") as? Int)
      let requests = try #require(
        try browser.evaluate("evsamTest.state.everythingRequests") as? Int)
      try browser.mouse(at: try pagePoint(300, 200))
      try browser.waitUntil(
        "evsamTest.state.layer !== null && document.body.dataset.status === 'ready'")
      _ = try browser.evaluate("document.getElementById('everything').focus()")
      try browser.pressEnter()
      try browser.waitUntil(
        "evsamTest.state.everythingRequests === \(requests + 1) && document.body.dataset.status === 'ready'"
      )
      #expect(try browser.evaluate("evsamTest.state.layer !== null") as? Bool == true)
      let afterButton = try #require(
        try browser.evaluate("evsamTest.state.annotations.filter(a => a.source === 'kept').length")
          as? Int)
      #expect(afterButton == 1)
      // With the focus elsewhere, Enter keeps the mask and runs nothing.
      _ = try browser.evaluate("document.activeElement.blur()")
      try browser.pressEnter()
      try browser.waitUntil("evsamTest.state.layer === null")
      #expect(
        try browser.evaluate("evsamTest.state.annotations.filter(a => a.source === 'kept').length")
          as? Int == 2)
      #expect(
        try browser.evaluate("evsamTest.state.everythingRequests") as? Int == requests + 1)
      let count = try #require(try browser.evaluate("evsamTest.state.annotations.length") as? Int)
      #expect(count >= kept)

      // A file named like a PNG that is not one: an error, and nothing lost or out of step.
      let broken = folder.appendingPathComponent("broken.png")
      try Data("not an image".utf8).write(to: broken)
      try browser.setFile(selector: "#file", path: broken.path)
      try browser.waitUntil("document.body.dataset.status === 'error'")
      #expect(try browser.evaluate("evsamTest.state.annotations.length") as? Int == count)
      #expect(
        try browser.evaluate("document.getElementById('annotation-count').textContent")
          as? String == String(count))
      #expect(
        try browser.evaluate("document.querySelectorAll('#annotations li').length") as? Int
          == count)
      #expect(try coco(browser).annotations.count == count)
      #expect(try browser.evaluate("evsamTest.state.file.name") as? String == "coffee.jpg")

      // Another image: its own (empty) list; the first image's annotations stay in the download.
      try browser.setFile(selector: "#file", path: try Fixtures.url("images/chelsea.png").path)
      try browser.waitUntil(
        "evsamTest.state.file.name === 'chelsea.png' && evsamTest.state.imageId !== null && document.body.dataset.status === 'ready'"
      )
      #expect(try browser.evaluate("evsamTest.state.annotations.length") as? Int == 0)
      let both = try coco(browser)
      #expect(both.images.map(\.fileName) == ["chelsea.png", "coffee.jpg"])
      #expect(both.annotations.count == count && both.annotations.allSatisfy { $0.imageID == 2 })
      #expect(
        (try browser.evaluate("document.getElementById('other-annotations').textContent") as? String)?
          .contains("\(count) more") == true)

      // Back to the first image: its annotations are back.
      try browser.setFile(selector: "#file", path: TestServer.exampleJPEG.path)
      try browser.waitUntil(
        "evsamTest.state.file.name === 'coffee.jpg' && evsamTest.state.imageId !== null && document.body.dataset.status === 'ready'"
      )
      #expect(try browser.evaluate("evsamTest.state.annotations.length") as? Int == count)
      #expect(try coco(browser).images.count == 1)
    }

    /// Label classes: a class added in the side panel becomes the class of the next kept mask
    /// and a category of the COCO download; Undo after a keep takes the annotation back and
    /// shows its prompt and mask again.
    static func checkClassesAndUndoingAKeep(
      _ browser: ChromiumSession, pagePoint: (Double, Double) throws -> (x: Double, y: Double)
    ) throws {
      let count = try #require(try browser.evaluate("evsamTest.state.annotations.length") as? Int)
      _ = try browser.evaluate(
        "document.getElementById('class-name').value = 'cup'; document.getElementById('add-class').requestSubmit()"
      )
      #expect(
        try browser.evaluate("evsamTest.state.classes.map(c => c.name)") as? [String]
          == ["object", "cup"])
      #expect(try browser.evaluate("evsamTest.state.classIndex") as? Int == 1)
      #expect(
        try browser.evaluate("document.querySelectorAll('#classes button').length") as? Int == 2)
      #expect(
        try browser.evaluate("document.querySelector('#classes .selected').textContent") as? String
          == "cup")

      try browser.mouse(at: try pagePoint(300, 200))
      try browser.waitUntil(
        "evsamTest.state.layer !== null && document.body.dataset.status === 'ready'")
      _ = try browser.evaluate("document.activeElement.blur()")
      try browser.pressEnter()
      try browser.waitUntil("evsamTest.state.annotations.length === \(count + 1)")
      #expect(
        try browser.evaluate("evsamTest.state.annotations[\(count)].category") as? String == "cup")
      let document = try coco(browser)
      #expect(document.categories.map(\.name) == ["object", "cup"])
      #expect(document.categories.map(\.id) == [1, 2])
      #expect(document.annotations.last?.categoryID == 2)
      #expect(document.annotations.dropLast().allSatisfy { $0.categoryID == 1 })

      // Undo: the kept mask leaves the list and is on screen again with its click.
      _ = try browser.evaluate("document.getElementById('undo').click()")
      try browser.waitUntil(
        "evsamTest.state.annotations.length === \(count) && evsamTest.state.layer !== null && document.body.dataset.status === 'ready'"
      )
      #expect(try browser.evaluate("evsamTest.state.points.length") as? Int == 1)
      #expect(try coco(browser).annotations.count == count + 1, "the mask shown is exported too")
    }

    /// The wheel zooms about the cursor and clicks still land on the image pixel under them;
    /// several files opened together are visited with Next and Previous, each keeping its own
    /// annotations.
    static func checkZoomAndSeveralImages(
      _ browser: ChromiumSession, pagePoint: (Double, Double) throws -> (x: Double, y: Double)
    ) throws {
      _ = try browser.evaluate("document.getElementById('clear').click()")
      try browser.waitUntil(
        "evsamTest.state.layer === null && document.body.dataset.status === 'ready'")
      let before = try pagePoint(300, 200)
      _ = try browser.evaluate(
        "document.getElementById('stage').dispatchEvent(new WheelEvent('wheel', {deltaY: -600, clientX: \(before.x), clientY: \(before.y), bubbles: true, cancelable: true}))"
      )
      let scale = try #require(try browser.evaluate("evsamTest.state.zoom.s") as? Double)
      #expect(scale > 2)
      // The point under the cursor stayed put.
      let after = try pagePoint(300, 200)
      #expect(abs(after.x - before.x) < 1 && abs(after.y - before.y) < 1, "\(before) → \(after)")
      try browser.mouse(at: try pagePoint(250, 150))
      try browser.waitUntil(
        "evsamTest.state.points.length === 1 && document.body.dataset.status === 'ready'")
      let p = try #require(
        try browser.evaluate("[evsamTest.state.points[0].x, evsamTest.state.points[0].y]")
          as? [Double])
      #expect(abs(p[0] - 250) < 1 && abs(p[1] - 150) < 1, "\(p)")
      _ = try browser.evaluate("document.getElementById('fit').click()")
      #expect(try browser.evaluate("evsamTest.state.zoom.s") as? Double == 1)
      _ = try browser.evaluate("document.getElementById('clear').click()")
      try browser.waitUntil(
        "evsamTest.state.layer === null && document.body.dataset.status === 'ready'")

      // Two images at once: the first opens, Next and Previous move between them.
      let kept = try #require(try browser.evaluate("evsamTest.state.annotations.length") as? Int)
      try browser.setFiles(
        selector: "#file",
        paths: [TestServer.exampleJPEG.path, try Fixtures.url("images/chelsea.png").path])
      try browser.waitUntil(
        "evsamTest.state.queue.length === 2 && evsamTest.state.file.name === 'coffee.jpg' && evsamTest.state.imageId !== null && document.body.dataset.status === 'ready'"
      )
      #expect(
        try browser.evaluate("document.getElementById('image-position').textContent") as? String
          == "1 / 2")
      #expect(try browser.evaluate("evsamTest.state.annotations.length") as? Int == kept)
      _ = try browser.evaluate("document.getElementById('next').click()")
      try browser.waitUntil(
        "evsamTest.state.file.name === 'chelsea.png' && evsamTest.state.imageId !== null && document.body.dataset.status === 'ready'"
      )
      #expect(try browser.evaluate("document.getElementById('next').disabled") as? Bool == true)
      _ = try browser.evaluate("document.getElementById('previous').click()")
      try browser.waitUntil(
        "evsamTest.state.file.name === 'coffee.jpg' && evsamTest.state.imageId !== null && document.body.dataset.status === 'ready'"
      )
      #expect(try browser.evaluate("evsamTest.state.annotations.length") as? Int == kept)
    }

    /// Waits until every file exists with its final size (downloads are written in place).
    static func waitForFiles(_ files: [URL], seconds: Double = 30) throws {
      let end = Date().addingTimeInterval(seconds)
      while Date() < end {
        if files.allSatisfy({ FileManager.default.fileExists(atPath: $0.path) }) {
          usleep(200_000)
          return
        }
        usleep(50_000)
      }
      throw TestFailure("downloads missing after \(seconds) s: \(files.map(\.lastPathComponent))")
    }
  }
}
