"""Passage phrasings: how each family's facts are written down (prose, table rows, JSON).

Written on their own, apart from the question phrasings in ``questions.py``. Prose templates put
several facts in one sentence and all of an entity's facts in one passage, in different orders;
tables hold several entities as markdown rows; JSON records hold one or two entities.
"""

from __future__ import annotations

import json
import random
import re

from rag_data.text import capitalise

# family -> lang -> prose templates ({name}, {first} for English people, one slot per relation)
PROSE: dict[str, dict[str, tuple[str, ...]]] = {
    "scientist_bio": {
        "en": (
            "{name} was born on {birth_date} in {birth_city}. After reading {subject} at "
            "{university}, {first} spent most of a career at {employer}.",
            "A graduate of {university}, where {first} majored in {subject}, {name} has worked "
            "for {employer} for years; {first} was born in {birth_city} on {birth_date}.",
            "{name} (born {birth_date}, {birth_city}) joined {employer} straight after a degree "
            "in {subject} from {university}.",
        ),
        "zh": (
            "{name}，{birth_date}生于{birth_city}，毕业于{university}{subject}专业，现就职于"
            "{employer}。",
            "{name}在{university}攻读{subject}，毕业后进入{employer}工作。{name}出生于"
            "{birth_city}，生日是{birth_date}。",
            "出生在{birth_city}的{name}（{birth_date}）是{employer}的研究员，早年在{university}"
            "学习{subject}。",
        ),
    },
    "company": {
        "en": (
            "{name} was founded in {founded} and is headquartered in {headquarters}. Its chief "
            "executive, {ceo}, leads a staff of {staff}, and the firm is best known for "
            "{product}.",
            "Best known for its {product}, {name} employs {staff} people from its head office "
            "in {headquarters}. The company dates back to {founded}; {ceo} has run it since the "
            "last reorganisation.",
            "{ceo} is the CEO of {name}, a maker of {product} set up in {founded}. About {staff} "
            "people work there, most of them at the {headquarters} headquarters.",
        ),
        "zh": (
            "{name}成立于{founded}年，总部设在{headquarters}，首席执行官是{ceo}，现有员工{staff}"
            "人，主要产品是{product}。",
            "以{product}闻名的{name}总部位于{headquarters}，员工约{staff}人。公司创办于{founded}"
            "年，目前由{ceo}担任总裁。",
            "{ceo}执掌的{name}创立于{founded}年，生产{product}；公司在{headquarters}的总部和各地"
            "分支共有{staff}名员工。",
        ),
    },
    "gadget": {
        "en": (
            "The {name} is made by {maker}. It weighs {weight}, runs for {battery_life} on a "
            "charge and went on sale in {release_year} at {price}.",
            "Released in {release_year} for {price}, the {name} from {maker} lasts "
            "{battery_life} between charges and weighs just {weight}.",
            "At {weight}, the {name} is light. {maker} launched it in {release_year}; its "
            "battery gives {battery_life}, and it costs {price}.",
        ),
        "zh": (
            "{name}由{maker}生产，重{weight}，充满电可用{battery_life}，{release_year}年上市，"
            "售价{price}。",
            "{release_year}年发布的{name}售价{price}，续航{battery_life}，整机仅{weight}，"
            "出自{maker}。",
            "{maker}推出的{name}重量为{weight}，电池续航{battery_life}，定价{price}，"
            "于{release_year}年开售。",
        ),
    },
    "town": {
        "en": (
            "{name} lies on {river} and has {population} inhabitants. Its mayor is {mayor}, "
            "the weekly market is held on {market_day}, and the town is twinned with "
            "{twin_town}.",
            "Twinned with {twin_town} since the 1970s, {name} ({population} residents) sits "
            "where {river} bends south. {mayor} was elected mayor last spring; stalls fill the "
            "square every {market_day}.",
            "Every {market_day} farmers bring their produce to {name}, a town of {population} "
            "on the banks of {river}. {mayor} heads the council, which keeps close ties with "
            "its twin town, {twin_town}.",
        ),
        "zh": (
            "{name}位于{river}畔，人口{population}，现任镇长是{mayor}，每逢{market_day}有集市，"
            "友好城市是{twin_town}。",
            "{name}与{twin_town}结为友好城市，全镇共有{population}人，{river}从镇南流过。"
            "{mayor}去年当选镇长；每周{market_day}广场上摆满摊位。",
            "每到{market_day}，农民们便把农产品运到{name}的集市上。这个{population}人的小镇"
            "坐落在{river}边，由{mayor}主持镇务，并与{twin_town}往来密切。",
        ),
    },
    "permit": {
        "en": (
            "To get a {name}, apply in person at {office} with form {form_code} and bring "
            "{document}. The fee is {fee} and a decision takes {processing_days}.",
            "Applications for the {name} are handled by {office}. Fill in form {form_code}, "
            "attach {document} and pay {fee}; expect an answer within {processing_days}.",
            "The {name} costs {fee}. You will need form {form_code} and {document}; hand them "
            "in at {office}, and allow {processing_days} for processing.",
        ),
        "zh": (
            "申请{name}需本人前往{office}，填写{form_code}表并携带{document}，费用{fee}，"
            "审批需要{processing_days}。",
            "{name}由{office}受理。填好{form_code}表，附上{document}，缴纳{fee}，"
            "一般{processing_days}内给出结果。",
            "办理{name}收费{fee}。所需材料为{form_code}表和{document}，递交地点是{office}，"
            "办理周期为{processing_days}。",
        ),
    },
    "appliance_manual": {
        "en": (
            "{name}: to restore factory settings, hold the power button for {reset_seconds}. "
            "Replace the filter {filter_interval}. The water tank holds {tank_capacity}; the "
            "unit runs at {noise_level}. For app pairing, join the Wi-Fi network "
            "{setup_network}.",
            "Maintenance of the {name}. Filter: change it {filter_interval}. Tank: "
            "{tank_capacity}, empty it when the light turns red. Pairing network: "
            "{setup_network}. Factory reset: press and hold power for {reset_seconds}. "
            "Noise: {noise_level}.",
            "The {name} is quiet ({noise_level}) and its {tank_capacity} tank lasts a day. "
            "Holding the power button for {reset_seconds} resets it; the setup network it "
            "broadcasts is called {setup_network}, and the filter should be swapped "
            "{filter_interval}.",
        ),
        "zh": (
            "{name}：恢复出厂设置时，长按电源键{reset_seconds}。滤网应{filter_interval}更换一次。"
            "水箱容量{tank_capacity}，运行噪音{noise_level}。连接手机应用时请加入Wi-Fi网络"
            "{setup_network}。",
            "{name}保养说明。滤网：{filter_interval}更换。水箱：{tank_capacity}，红灯亮时请倒水。"
            "配网热点：{setup_network}。恢复出厂：按住电源键{reset_seconds}。噪音：{noise_level}。",
            "{name}运行安静（{noise_level}），{tank_capacity}的水箱可用一整天。按住电源键"
            "{reset_seconds}即可复位；设备发出的配置网络名为{setup_network}，滤网建议"
            "{filter_interval}换新。",
        ),
    },
    "ship": {
        "en": (
            "{name} was built by {shipyard} and launched in {launched}. The {tonnage} vessel "
            "sails from {home_port} under Captain {captain}.",
            "Captain {captain} commands {name}, a ship of {tonnage} registered in {home_port}. "
            "She left the slipway at {shipyard} in {launched}.",
            "Launched in {launched} at {shipyard}, {name} displaces {tonnage}. Her home port is "
            "{home_port} and her master is {captain}.",
        ),
        "zh": (
            "{name}由{shipyard}建造，{launched}年下水，排水量{tonnage}，船籍港为{home_port}，"
            "船长是{captain}。",
            "{captain}船长指挥的{name}排水量{tonnage}，以{home_port}为母港；该船{launched}年"
            "在{shipyard}下水。",
            "{launched}年，{name}在{shipyard}下水。这艘{tonnage}的船从{home_port}出航，"
            "现任船长{captain}。",
        ),
    },
    "household": {
        "en": (
            "{name} grew up in {hometown} and still drives the old {car_make} bought there. "
            "Weekends go on {hobby}, with {first}'s dog {dog_name} in tow, and {first} speaks "
            "{second_language} fluently.",
            "Ask {name} about {hobby} and you will be there all afternoon. {first} learned "
            "{second_language} as a student, keeps a {car_make} in the lane, walks a terrier "
            "called {dog_name}, and was raised in {hometown}.",
            "Neighbours know {name} by the dog, {dog_name}, and the battered {car_make}. "
            "Originally from {hometown}, {first} took up {hobby} years ago and chats in "
            "{second_language} with the family abroad.",
        ),
        "zh": (
            "{name}在{hometown}长大，至今还开着一辆{car_make}。周末喜欢{hobby}，总带着狗狗"
            "{dog_name}，还能说一口流利的{second_language}。",
            "说起{hobby}，{name}能聊一下午。{name}读书时学过{second_language}，家里停着一辆"
            "{car_make}，养了一条叫{dog_name}的小狗，老家在{hometown}。",
            "邻居们都认识{name}家的狗{dog_name}和那辆旧{car_make}。{name}是{hometown}人，"
            "多年前迷上了{hobby}，常用{second_language}和海外亲戚聊天。",
        ),
    },
    "research_lab": {
        "en": (
            "The {name} in {lab_city} was set up by {founder} to study {focus}. It is funded by "
            "{funder} and today {director} serves as its director.",
            "{director} directs the {name}, which {founder} started in {lab_city}. With money "
            "from {funder}, its staff work on {focus}.",
            "Research on {focus} is the business of the {name}. Founded by {founder} and "
            "supported by {funder}, the {lab_city} group is now led by {director}.",
        ),
        "zh": (
            "位于{lab_city}的{name}由{founder}创建，专门研究{focus}，经费来自{funder}，现任主任是"
            "{director}。",
            "{director}主持的{name}最初由{founder}在{lab_city}创办。在{funder}的资助下，"
            "研究人员致力于{focus}。",
            "{name}以{focus}为研究方向。它由{founder}创立、{funder}资助，这个{lab_city}的团队"
            "目前由{director}领导。",
        ),
    },
    "software_library": {
        "en": (
            "{name} is an open-source package written in {written_in} and released under the "
            "{licence} licence. The first release came out in {first_release}; the current "
            "version is {latest_version}, maintained by {maintainer}.",
            "Version {latest_version} of {name} is out. {maintainer}, who has maintained the "
            "{written_in} code base since {first_release}, keeps it under {licence}.",
            "{name} ({licence}) first shipped in {first_release}. It is implemented in "
            "{written_in}; {maintainer} tags the releases, the newest being {latest_version}.",
        ),
        "zh": (
            "{name}是一个用{written_in}编写的开源库，采用{licence}许可证，{first_release}年首次"
            "发布，当前版本{latest_version}，维护者是{maintainer}。",
            "{name}发布了{latest_version}版。自{first_release}年起，{maintainer}一直维护这个"
            "{written_in}项目，并以{licence}协议开源。",
            "{name}（{licence}）于{first_release}年推出，使用{written_in}实现；{maintainer}"
            "负责发版，最新版本为{latest_version}。",
        ),
    },
    "landmark": {
        "en": (
            "The {name}, designed by {architect}, was completed in {completed}. It rises "
            "{height} above {district} and is clad in {material}.",
            "Built of {material} and finished in {completed}, the {name} stands {height} tall in "
            "{district}. Its architect was {architect}.",
            "{architect} drew the plans for the {name}, the {height} landmark of {district}; "
            "builders finished the {material} structure in {completed}.",
        ),
        "zh": (
            "{name}由{architect}设计，{completed}年落成，高{height}，坐落于{district}，"
            "外墙采用{material}。",
            "{name}以{material}建造，{completed}年完工，耸立在{district}，高达{height}，"
            "设计师是{architect}。",
            "{architect}为{district}设计了{name}这座{height}高的地标；这座{material}建筑"
            "于{completed}年竣工。",
        ),
    },
    "recipe": {
        "en": (
            "{name} (serves {servings}): the star is {main_ingredient}. Bake at {oven_temp} for "
            "{bake_time}, then let it rest for {rest_time} before cutting.",
            "Heat the oven to {oven_temp}. Layer the {main_ingredient}, cover and bake for "
            "{bake_time}. Leave the {name} to stand for {rest_time}; it feeds {servings}.",
            "A {name} for {servings} people. Main ingredient: {main_ingredient}. Oven: "
            "{oven_temp}, {bake_time}. Resting: {rest_time}.",
        ),
        "zh": (
            "{name}（{servings}人份）：主料是{main_ingredient}。烤箱{oven_temp}烤{bake_time}，"
            "出炉后静置{rest_time}再切。",
            "烤箱预热至{oven_temp}。铺好{main_ingredient}，盖上后烤{bake_time}。{name}出炉后"
            "放置{rest_time}，可供{servings}人食用。",
            "{servings}人份的{name}。主料：{main_ingredient}。烤箱：{oven_temp}，{bake_time}。"
            "静置：{rest_time}。",
        ),
    },
    "cli_manual": {
        "en": (
            "{name} reads its settings from {config_path} and listens on port {default_port} "
            "unless told otherwise. Run `{list_ports_cmd}` to list the open ports it sees; add "
            "{verbose_flag} for verbose output. Logs are written to {log_dir}.",
            "Quick reference for {name}. Open ports: `{list_ports_cmd}`. Verbose mode: "
            "{verbose_flag}. Configuration file: {config_path}. Log directory: {log_dir}. "
            "Default port: {default_port}.",
            "By default {name} binds to {default_port}. When something looks wrong, check "
            "{log_dir}, rerun with {verbose_flag}, and compare `{list_ports_cmd}` (which "
            "prints every open port) against {config_path}.",
        ),
        "zh": (
            "{name}从{config_path}读取配置，默认监听{default_port}端口。运行`{list_ports_cmd}`"
            "可列出它看到的开放端口；加上{verbose_flag}输出详细信息。日志写入{log_dir}。",
            "{name}速查：开放端口：`{list_ports_cmd}`。详细模式：{verbose_flag}。配置文件："
            "{config_path}。日志目录：{log_dir}。默认端口：{default_port}。",
            "{name}默认绑定{default_port}端口。出现问题时，先查看{log_dir}，再用{verbose_flag}"
            "重新运行，并把`{list_ports_cmd}`（列出所有开放端口）的结果与{config_path}对照。",
        ),
    },
    "sports_club": {
        "en": (
            "{name} were founded in {club_founded} and play in {league}. Home games are at "
            "{stadium}; the team wears {kit_colours}, and {coach} is the head coach.",
            "Head coach {coach} took over {name} last season. The club, formed in "
            "{club_founded}, plays its home matches at {stadium} in {kit_colours} and competes "
            "in {league}.",
            "In {kit_colours} at {stadium}, {name} have been a fixture of {league} for decades. "
            "The side dates from {club_founded}; {coach} picks the team.",
        ),
        "zh": (
            "{name}成立于{club_founded}年，参加{league}，主场是{stadium}，球衣为{kit_colours}"
            "配色，主教练是{coach}。",
            "{coach}上赛季接手{name}。这支{club_founded}年组建的球队在{stadium}迎战对手，"
            "身穿{kit_colours}球衣，征战{league}。",
            "身着{kit_colours}球衣、以{stadium}为主场的{name}多年来一直是{league}的常客。"
            "球队始建于{club_founded}年，由{coach}执教。",
        ),
    },
}

# family -> lang -> (caption, {relation: column label}); also the JSON keys for Chinese
TABLE: dict[str, dict[str, tuple[str, dict[str, str]]]] = {
    "scientist_bio": {
        "en": ("Staff researchers", {"birth_date": "Date of birth", "birth_city": "Birthplace",
                                     "university": "Alma mater", "subject": "Degree",
                                     "employer": "Current employer"}),
        "zh": ("研究人员名录", {"birth_date": "出生日期", "birth_city": "出生地",
                                "university": "毕业院校", "subject": "专业",
                                "employer": "工作单位"}),
    },
    "company": {
        "en": ("Member firms", {"founded": "Founded", "headquarters": "HQ", "ceo": "CEO",
                                "staff": "Employees", "product": "Main product"}),
        "zh": ("会员企业一览", {"founded": "成立年份", "headquarters": "总部", "ceo": "总裁",
                                "staff": "员工人数", "product": "主营产品"}),
    },
    "gadget": {
        "en": ("Device comparison", {"maker": "Brand", "weight": "Weight",
                                     "battery_life": "Battery", "price": "Launch price",
                                     "release_year": "Year"}),
        "zh": ("设备对比", {"maker": "品牌", "weight": "重量", "battery_life": "续航",
                            "price": "首发价", "release_year": "年份"}),
    },
    "town": {
        "en": ("Towns of the valley", {"population": "Population", "river": "River",
                                       "mayor": "Mayor", "twin_town": "Twinned with",
                                       "market_day": "Market day"}),
        "zh": ("流域城镇概况", {"population": "人口", "river": "河流", "mayor": "镇长",
                                "twin_town": "友好城市", "market_day": "集市日"}),
    },
    "permit": {
        "en": ("Permits and how to obtain them", {"office": "Where to apply", "fee": "Fee",
                                                  "processing_days": "Processing time",
                                                  "form_code": "Form",
                                                  "document": "Also bring"}),
        "zh": ("证照办理指南", {"office": "办理地点", "fee": "费用", "processing_days": "办理时限",
                                "form_code": "表格编号", "document": "附带材料"}),
    },
    "appliance_manual": {
        "en": ("Specifications and care", {"reset_seconds": "Factory reset (hold power)",
                                           "filter_interval": "Filter change",
                                           "tank_capacity": "Tank",
                                           "setup_network": "Setup Wi-Fi",
                                           "noise_level": "Noise"}),
        "zh": ("规格与保养", {"reset_seconds": "恢复出厂（长按电源）",
                              "filter_interval": "滤网更换",
                              "tank_capacity": "水箱", "setup_network": "配网Wi-Fi",
                              "noise_level": "噪音"}),
    },
    "ship": {
        "en": ("Fleet register", {"shipyard": "Builder", "launched": "Launched",
                                  "home_port": "Port of registry", "captain": "Master",
                                  "tonnage": "Displacement"}),
        "zh": ("船队登记表", {"shipyard": "建造厂", "launched": "下水年份", "home_port": "船籍港",
                              "captain": "船长", "tonnage": "排水量"}),
    },
    "household": {
        "en": ("Residents' association members", {"dog_name": "Dog", "car_make": "Car",
                                                  "hobby": "Pastime",
                                                  "second_language": "Other language",
                                                  "hometown": "Grew up in"}),
        "zh": ("业主委员会成员", {"dog_name": "狗的名字", "car_make": "汽车", "hobby": "爱好",
                                  "second_language": "外语", "hometown": "老家"}),
    },
    "research_lab": {
        "en": ("Research groups", {"founder": "Founded by", "director": "Director",
                                   "funder": "Funding", "lab_city": "City",
                                   "focus": "Research area"}),
        "zh": ("科研机构名单", {"founder": "创始人", "director": "主任", "funder": "资助方",
                                "lab_city": "所在城市", "focus": "研究方向"}),
    },
    "software_library": {
        "en": ("Dependencies", {"latest_version": "Version", "licence": "License",
                                "written_in": "Language", "maintainer": "Maintainer",
                                "first_release": "Since"}),
        "zh": ("依赖清单", {"latest_version": "版本", "licence": "许可证", "written_in": "语言",
                            "maintainer": "维护者", "first_release": "首发年份"}),
    },
    "landmark": {
        "en": ("Listed buildings", {"architect": "Architect", "height": "Height",
                                    "completed": "Completed", "material": "Facade",
                                    "district": "Location"}),
        "zh": ("保护建筑名录", {"architect": "建筑师", "height": "高度", "completed": "竣工年份",
                                "material": "外立面", "district": "位置"}),
    },
    "recipe": {
        "en": ("Bakes for the week", {"oven_temp": "Oven", "bake_time": "Bake",
                                      "main_ingredient": "Key ingredient",
                                      "servings": "Serves", "rest_time": "Rest"}),
        "zh": ("本周烘焙", {"oven_temp": "烤箱温度", "bake_time": "烘烤时间",
                            "main_ingredient": "主料", "servings": "份量（人）",
                            "rest_time": "静置时间"}),
    },
    "cli_manual": {
        "en": ("Tool cheat sheet", {"list_ports_cmd": "Open ports", "config_path": "Config",
                                    "default_port": "Port", "verbose_flag": "Verbose",
                                    "log_dir": "Logs"}),
        "zh": ("工具速查表", {"list_ports_cmd": "开放端口", "config_path": "配置文件",
                              "default_port": "端口", "verbose_flag": "详细输出",
                              "log_dir": "日志"}),
    },
    "sports_club": {
        "en": ("Clubs", {"coach": "Manager", "stadium": "Ground", "club_founded": "Formed",
                         "league": "Competition", "kit_colours": "Colours"}),
        "zh": ("俱乐部一览", {"coach": "主教练", "stadium": "主场", "club_founded": "成立",
                              "league": "赛事", "kit_colours": "队服"}),
    },
}

NAME_LABEL = {"en": "Name", "zh": "名称"}

FORMATS = ("prose", "table", "json")
GROUP = {"prose": 1, "table": 3, "json": 2}  # entities per passage of each format


def prose(family: str, lang: str, name: str, facts: dict[str, str],
          rng: random.Random) -> str:
    template = rng.choice(PROSE[family][lang])
    first = name.split()[0] if lang == "en" else name
    return capitalise(template.format(name=name, first=first, **facts), name)


def table(family: str, lang: str, rows: list[tuple[str, dict[str, str]]],
          rng: random.Random) -> str:
    caption, labels = TABLE[family][lang]
    relations = list(labels)
    rng.shuffle(relations)  # columns in a different order from table to table
    head = [NAME_LABEL[lang]] + [labels[r] for r in relations]
    lines = [caption + ("：" if lang == "zh" else ":"), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, facts in rows:
        lines.append("| " + " | ".join([name] + [facts[r] for r in relations]) + " |")
    return "\n".join(lines)


def json_records(family: str, lang: str, rows: list[tuple[str, dict[str, str]]],
                 rng: random.Random) -> str:
    """English keys (snake case of the column labels) for English, Chinese labels for Chinese."""
    _, labels = TABLE[family][lang]
    relations = list(labels)
    rng.shuffle(relations)

    def key(relation: str) -> str:
        label = labels[relation]
        if lang == "zh":
            return label
        return re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_")

    name_key = "name" if lang == "en" else "名称"
    records = [{name_key: name, **{key(r): facts[r] for r in relations}} for name, facts in rows]
    body = records[0] if len(records) == 1 else records
    return json.dumps(body, ensure_ascii=False, indent=1)


def render(fmt: str, family: str, lang: str, rows: list[tuple[str, dict[str, str]]],
           rng: random.Random) -> str:
    if fmt == "prose":
        if len(rows) != 1:
            raise ValueError(f"a prose passage holds one entity, got {len(rows)}")
        return prose(family, lang, rows[0][0], rows[0][1], rng)
    if fmt == "table":
        return table(family, lang, rows, rng)
    if fmt == "json":
        return json_records(family, lang, rows, rng)
    raise ValueError(f"unknown passage format {fmt!r}; expected one of {FORMATS}")
