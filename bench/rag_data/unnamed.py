"""Dev questions that name nothing: what the reader's bar for such questions is fitted on.

Notices about unnamed things (a pool, a station's bike park) with one question each in other
words than the notice, and questions that no passage answers: off-topic ones, and ones about
the dev families' kinds of things whose answer is in no passage. Written for the bench, dev
only: nothing of the test families is asked here.
"""

from __future__ import annotations

# (passage, question, expected answer)
NOTICES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "en": (
        ("Members' notice: the swimming pool closes for cleaning every Tuesday morning, and "
         "lane hire costs 4 euros an hour.",
         "On which morning is swimming impossible?", "Tuesday"),
        ("Bicycle parking behind the station is free for the first two hours; after that each "
         "hour costs 50 cents.",
         "How long can I leave my bike near the trains without paying?", "two hours"),
        ("Lost property found on the trams is kept at the depot for 30 days before it is "
         "given to charity.",
         "For how many days is something left on a tram held?", "30 days"),
        ("The recycling lorry collects glass on the first Monday of each month; paper goes "
         "out every Thursday.",
         "When are old newspapers picked up?", "Thursday"),
        ("Visitors to the hospital wards are welcome between 2 pm and 8 pm; children under "
         "twelve must come with an adult.",
         "Until what time in the evening may I see a patient?", "8 pm"),
        ("The community garden lends out tools free of charge, but a deposit of 20 euros is "
         "asked for the lawnmower.",
         "What must I leave behind to borrow the mower?", "20 euros"),
    ),
    "zh": (
        ("游泳馆通知：每周二上午闭馆清洁，泳道租用每小时四十元。", "哪天上午不能去游泳？", "周二"),
        ("车站后面的自行车停车场前两个小时免费，之后每小时收费一元。",
         "自行车在车站附近停多久不用付钱？", "两个小时"),
        ("在电车上捡到的失物会在车库保存三十天，之后捐给慈善机构。",
         "落在电车上的东西能留多少天？", "三十天"),
        ("玻璃瓶每月第一个星期一回收，废纸每周四回收。", "旧报纸什么时候收走？", "周四"),
        ("病房探视时间为下午两点到晚上八点，十二岁以下儿童须由成人陪同。",
         "晚上最晚几点可以看望病人？", "八点"),
        ("社区花园免费出借工具，借割草机需要交二十元押金。", "借割草机得押多少钱？", "二十元"),
    ),
}

# Questions that no passage answers: off-topic, and about the dev families' kinds of things.
ABSENT: dict[str, tuple[str, ...]] = {
    "en": (
        "How many legs does a spider have?", "What is a good way to fall asleep faster?",
        "Why is the sky blue?", "How long should an egg be boiled?",
        "How far away is the moon?", "What is the best way to learn to juggle?",
        "Which scientist won a prize for their research?",
        "How many days of holiday do the company employees get?",
        "What warranty comes with the gadgets?", "Which town has the oldest church?",
        "How long does a fishing permit stay valid?",
        "How many lifeboats does each ship carry?",
    ),
    "zh": (
        "蜘蛛有几条腿？", "怎样才能更快入睡？", "天空为什么是蓝色的？", "鸡蛋要煮几分钟？",
        "月亮离地球有多远？", "学杂耍有什么好办法？",
        "哪位科学家因为研究获过奖？", "公司员工每年有多少天假期？", "这些电子产品保修多久？",
        "哪个城镇的教堂最古老？", "许可证的有效期是多久？", "每艘船配备几艘救生艇？",
    ),
}
