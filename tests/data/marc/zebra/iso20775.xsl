<?xml version="1.0" encoding="UTF-8"?>
<!-- A record's holdings as ISO 20775 (info:ofi/fmt:xml:xsd:iso20775), as a catalogue
     that serves that schema over SRU would: one holding per 852, one copyInformation per
     876 item, its 876 $j status as availabilityStatus (1 available, 2 not available). -->
<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
                xmlns:m="http://www.loc.gov/MARC21/slim"
                xmlns="info:ofi/fmt:xml:xsd:iso20775"
                exclude-result-prefixes="m" version="1.0">
  <xsl:output method="xml" encoding="UTF-8"/>
  <xsl:template match="/m:record">
    <holdings>
      <xsl:for-each select="m:datafield[@tag='852']">
        <xsl:variable name="items" select="../m:datafield[@tag='876']"/>
        <holding>
          <institutionIdentifier>
            <value><xsl:value-of select="m:subfield[@code='a']"/></value>
            <typeOrSource><text>ISIL</text></typeOrSource>
          </institutionIdentifier>
          <physicalLocation><xsl:value-of select="m:subfield[@code='b']"/></physicalLocation>
          <holdingSimple>
            <copiesSummary>
              <copiesCount><xsl:value-of select="count($items)"/></copiesCount>
              <status>
                <availableCount>
                  <xsl:value-of select="count($items[m:subfield[@code='j']='Available'
                                                     or m:subfield[@code='j']='在架'])"/>
                </availableCount>
              </status>
            </copiesSummary>
            <xsl:for-each select="$items">
              <copyInformation>
                <pieceIdentifier>
                  <value><xsl:value-of select="m:subfield[@code='p']"/></value>
                  <typeOrSource><text>barcode</text></typeOrSource>
                </pieceIdentifier>
                <availabilityInformation>
                  <status>
                    <availabilityStatus>
                      <xsl:choose>
                        <xsl:when test="m:subfield[@code='j']='Available'
                                        or m:subfield[@code='j']='在架'">1</xsl:when>
                        <xsl:otherwise>2</xsl:otherwise>
                      </xsl:choose>
                    </availabilityStatus>
                  </status>
                </availabilityInformation>
              </copyInformation>
            </xsl:for-each>
          </holdingSimple>
        </holding>
      </xsl:for-each>
    </holdings>
  </xsl:template>
</xsl:stylesheet>
