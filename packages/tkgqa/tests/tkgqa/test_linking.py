"""Entity linking: demonyms, role paraphrases, repeated names, and no foreign words inside a mention."""

from __future__ import annotations

from tkgqa.linking import EntityLinker

NAMES = ["Defense_/_Security_Ministry_(Denmark)", "Denmark", "Iraq", "Citizen_(United_Kingdom)", "Police_(China)",
         "Police_(Thailand)", "China", "Thailand", "Government_(Djibouti)", "Djibouti", "Head_of_Government_(Pakistan)",
         "Pakistan", "Media_Personnel_(Japan)", "Japan", "Cabinet_/_Council_of_Ministers_/_Advisors_(United_States)"]  # fmt: skip
linker = EntityLinker(NAMES)


def linked(text):
    return [NAMES[m.entity] for m in linker.link(text)]


def test_demonym_and_role_paraphrase_link_to_the_sector_name():
    assert linked("After the Danish Ministry of Defence and Security, who was the first to visit Iraq?") == [
        "Defense_/_Security_Ministry_(Denmark)", "Iraq"]  # fmt: skip
    assert linked("After the citizens of the United Kingdom, who visited Iraq?") == [
        "Citizen_(United_Kingdom)",
        "Iraq",
    ]
    assert linked("Who did the leader of Pakistan appeal to?") == ["Head_of_Government_(Pakistan)"]
    assert linked("Which country appealed to China after Japan's media staff?") == [
        "China",
        "Media_Personnel_(Japan)",
    ]


def test_a_name_said_twice_is_found_twice():
    assert linked("After the government of Djibouti, with whom did Djibouti want to negotiate first?") == [
        "Government_(Djibouti)", "Djibouti"]  # fmt: skip


def test_no_foreign_word_inside_a_mention():
    assert linked("In which year did China accuse Police (Thailand)?") == ["China", "Police_(Thailand)"]


def test_partial_bag_reaches_a_long_sector_name():
    assert linked("To whom did the United States Cabinet of Ministers appeal?") == [
        "Cabinet_/_Council_of_Ministers_/_Advisors_(United_States)"]  # fmt: skip
