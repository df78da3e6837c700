import AuthzData
import Foundation
import Testing

/// `JSONText.repeatedKey`: the first key given twice in one object, whatever the strings hold.
@Suite struct JSONTextTests {
    @Test(arguments: [
        (#"{"a":1,"b":2}"#, nil),
        (#"{"a":1,"a":2}"#, "a"),
        (#"{"a":1,"\u0061":2}"#, "a"),                        // escaped spellings are the same key
        (#"{"a\\":1,"a\\":2}"#, #"a\"#),                       // an escaped backslash ends the key
        (#"{"x":"\"a\":","a":1}"#, nil),                      // quotes inside a value are not keys
        (#"{"x":"\\","a":1,"y":"\\\"a\":"}"#, nil),
        (#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#, nil),       // the same key in different objects
        (#"{"checks":[{"s":1},{"s":1,"o":2,"s":3}]}"#, "s"),
        (#"{"e":{"a":1,"a":2}}"#, "a"),
        ("{ \"a\" : 1 , \"a\"\t:2}", "a"),
    ] as [(String, String?)])
    func repeatedKeys(json: String, repeated: String?) throws {
        _ = try JSONSerialization.jsonObject(with: Data(json.utf8)) // valid JSON, as callers have checked
        #expect(JSONText.repeatedKey(in: Data(json.utf8)) == repeated)
    }

    @Test func topLevelOnlyLooksAtTheOutermostObject() {
        #expect(JSONText.repeatedKey(in: Data(#"{"e":{"a":1,"a":2}}"#.utf8), topLevelOnly: true) == nil)
        #expect(JSONText.repeatedKey(in: Data(#"{"e":{"a":1},"e":2}"#.utf8), topLevelOnly: true) == "e")
    }

    /// Past 16 keys an object's keys go into a set: 40,000 keys (escaped or not) are scanned
    /// in linear time, and a repeat among them is still found.
    @Test func manyKeysAreFoundInOnePass() {
        let plain = (0..<40_000).map { "\"k\($0)\":1" }
        #expect(JSONText.repeatedKey(in: Data(("{" + plain.joined(separator: ",") + "}").utf8)) == nil)
        #expect(JSONText.repeatedKey(in: Data(("{" + (plain + ["\"k39999\":2"]).joined(separator: ",") + "}").utf8)) == "k39999")
        let escaped = (0..<3_000).map { "\"\\u0061\($0)\":1" }
        #expect(JSONText.repeatedKey(in: Data(("{" + (escaped + ["\"a17\":2"]).joined(separator: ",") + "}").utf8)) == "a17")
    }
}
